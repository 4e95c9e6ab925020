// End to end with the real client: WatermelonDB's own synchronize() on its LokiJS adapter
// (Node 20), two devices of one user against a live Memory Connector server.
//
// Run by sync/tests/test_watermelondb_e2e.py, which starts the server, a Celery worker and
// the OpenAI stub and passes SYNC_BASE_URL and SYNC_TOKEN. By hand:
//   SYNC_BASE_URL=http://127.0.0.1:8000 SYNC_TOKEN=<accessToken> npm test
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { test } from 'node:test'

const require = createRequire(import.meta.url)
const { Database, Model, appSchema, tableSchema } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { schemaMigrations } = require('@nozbe/watermelondb/Schema/migrations')
const { synchronize } = require('@nozbe/watermelondb/sync')
const { setGenerator } = require('@nozbe/watermelondb/utils/common/randomId')
const logger = require('@nozbe/watermelondb/utils/common/logger').default

const BASE_URL = process.env.SYNC_BASE_URL
const TOKEN = process.env.SYNC_TOKEN
assert.ok(BASE_URL && TOKEN, 'set SYNC_BASE_URL and SYNC_TOKEN')
const AUTH = { Authorization: `Bearer ${TOKEN}` }
const WAIT_MS = Number(process.env.SYNC_WAIT_MS || 60000)

// The server requires UUID ids for records created on a device.
setGenerator(() => randomUUID())
logger.silence()

class Memory extends Model {
  static table = 'memories'
}

async function api(path, options = {}) {
  const response = await fetch(`${BASE_URL}/api/v1${path}`, {
    ...options,
    headers: { ...AUTH, ...(options.headers || {}) },
  })
  const body = await response.json()
  if (!response.ok) {
    const error = new Error(`${response.status} ${JSON.stringify(body)}`)
    error.status = response.status
    error.body = body
    throw error
  }
  return body
}

// The app's schema, from the one the server publishes.
async function loadSchema() {
  const published = await api('/sync/schema')
  return appSchema({
    version: published.version,
    tables: published.tables.map((table) => tableSchema(table)),
  })
}

function makeDevice(name, schema) {
  const adapter = new LokiJSAdapter({
    schema,
    migrations: schemaMigrations({ migrations: [] }),
    dbName: `device-${name}-${randomUUID()}`,
    useWebWorker: false,
    useIncrementalIndexedDB: false,
    extraLokiOptions: { autosave: false },
  })
  const database = new Database({ adapter, modelClasses: [Memory] })
  const device = {
    name,
    database,
    collection: database.get('memories'),
    // Called between this device's pull and push: lets a test change the server meanwhile.
    beforePush: null,
    pushStatuses: [],
    async sync() {
      await synchronize({
        database,
        sendCreatedAsUpdated: true,
        migrationsEnabledAtVersion: 1,
        // The frontend of WatermelonDB's sync docs, plus the Authorization header.
        pullChanges: async ({ lastPulledAt, schemaVersion, migration }) => {
          const query = `last_pulled_at=${lastPulledAt}&schema_version=${schemaVersion}&migration=${encodeURIComponent(JSON.stringify(migration))}`
          const { changes, timestamp } = await api(`/sync?${query}`)
          return { changes, timestamp }
        },
        pushChanges: async ({ changes, lastPulledAt }) => {
          if (device.beforePush) {
            const hook = device.beforePush
            device.beforePush = null
            await hook()
          }
          // No Content-Type, as in the docs: fetch() sends text/plain.
          const response = await fetch(`${BASE_URL}/api/v1/sync?last_pulled_at=${lastPulledAt}`, {
            method: 'POST',
            headers: AUTH,
            body: JSON.stringify(changes),
          })
          device.pushStatuses.push(response.status)
          if (!response.ok) {
            const error = new Error(`push ${response.status}: ${await response.text()}`)
            error.status = response.status
            throw error
          }
        },
      })
    },
    async create(text, type = 'note') {
      let record
      await database.write(async () => {
        record = await device.collection.create((r) => {
          r._setRaw('text_content', text)
          r._setRaw('type', type)
        })
      })
      return record.id
    },
    async edit(id, text) {
      await database.write(async () => {
        const record = await device.collection.find(id)
        await record.update((r) => {
          r._setRaw('text_content', text)
        })
      })
    },
    async remove(id) {
      await database.write(async () => {
        const record = await device.collection.find(id)
        await record.markAsDeleted()
      })
    },
    async records() {
      const all = await device.collection.query().fetch()
      return all.map((r) => r._raw)
    },
    async byId() {
      return Object.fromEntries((await device.records()).map((raw) => [raw.id, raw]))
    },
  }
  return device
}

const COLUMNS = [
  'id',
  'text_content',
  'type',
  'category',
  'tags',
  'enrichment_status',
  'created_at',
  'updated_at',
  'enriched_at',
]

function comparable(raws) {
  return raws
    .map((raw) => Object.fromEntries(COLUMNS.map((column) => [column, raw[column] ?? null])))
    .sort((a, b) => a.id.localeCompare(b.id))
}

async function serverRecords() {
  const { changes } = await api('/sync?last_pulled_at=null&schema_version=1&migration=null')
  return changes.memories.updated
}

async function eventually(what, check) {
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

// Sync, and sync again after a 409 (the server changed a pushed record since the pull), as an
// app does; any other failure, or five conflicts in a row, fails the test.
async function syncRetrying(device) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await device.sync()
    } catch (error) {
      if (error.status !== 409 || attempt === 5) throw error
    }
  }
}

test('two offline devices converge with the server, see enrichment and survive a conflict', async () => {
  const schema = await loadSchema()
  const a = makeDevice('a', schema)
  const b = makeDevice('b', schema)

  // Offline on both devices.
  const milk = await a.create('Buy oat milk on the way home', 'task')
  const idea = await a.create('Idea: a bench by the river for the summer', 'idea')
  const quote = await b.create('"Simplicity is prerequisite for reliability"', 'quote')
  assert.match(milk, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/)

  // Sync in every order: A first, then B, then A again.
  await a.sync()
  await b.sync()
  await a.sync()
  assert.deepEqual(Object.keys(await a.byId()).sort(), [milk, idea, quote].sort())
  assert.deepEqual(Object.keys(await b.byId()).sort(), [milk, idea, quote].sort())
  assert.ok(a.pushStatuses.every((status) => status === 200), `${a.pushStatuses}`)

  // Enrichment happens on the server and reaches the device by pull.
  const enriched = await eventually('A to pull its memory enriched', async () => {
    await a.sync()
    const record = (await a.byId())[milk]
    return record.enrichment_status === 'enriched' ? record : null
  })
  assert.notEqual(enriched.category, '')
  assert.ok(Array.isArray(JSON.parse(enriched.tags)))
  assert.ok(enriched.enriched_at > 0)
  assert.equal(enriched._status, 'synced')

  // Edit on B and delete on A, offline; sync B, A, B. Enrichment still running on the server
  // may change a record between a device's pull and its push: that push is a 409, and the
  // device does what an app does, it syncs again.
  await b.edit(idea, 'Idea: a bench by the river, painted green')
  await a.remove(quote)
  await syncRetrying(b)
  await syncRetrying(a)
  await syncRetrying(b)
  assert.equal((await a.byId())[idea].text_content, 'Idea: a bench by the river, painted green')
  assert.equal((await b.byId())[quote], undefined)
  assert.equal((await a.byId())[quote], undefined)

  // A conflict: B pulls, then A's edit of the same memory reaches the server before B's push.
  await a.edit(milk, 'Buy oat milk and bread')
  await b.edit(milk, 'Buy oat milk, two cartons')
  b.beforePush = () => a.sync()
  await assert.rejects(b.sync(), (error) => error.status === 409)
  assert.equal(b.pushStatuses.at(-1), 409)
  // Nothing of B's push was applied; B still has its change and pulls again, then pushes.
  assert.equal((await serverRecords()).find((r) => r.id === milk).text_content, 'Buy oat milk and bread')
  assert.equal((await b.byId())[milk]._status, 'updated')
  await syncRetrying(b)
  assert.equal(b.pushStatuses.at(-1), 200)
  await syncRetrying(a)
  // WatermelonDB keeps the device's own change of a column over the server's on re-pull.
  assert.equal((await a.byId())[milk].text_content, 'Buy oat milk, two cartons')

  // Quiet down: every memory enriched for its current text, then both devices sync.
  await eventually('every memory enriched on the server', async () => {
    const records = await serverRecords()
    return records.every((r) => r.enrichment_status === 'enriched') ? records : null
  })
  await a.sync()
  await b.sync()
  const server = comparable(await serverRecords())
  assert.equal(server.length, 2)
  assert.deepEqual(comparable(await a.records()), server)
  assert.deepEqual(comparable(await b.records()), server)
  for (const raw of [...(await a.records()), ...(await b.records())]) {
    assert.equal(raw._status, 'synced')
  }
  console.log(`E2E-RESULT ${JSON.stringify({ server, pushes: { a: a.pushStatuses, b: b.pushStatuses } })}`)
})
