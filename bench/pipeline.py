"""Pipeline benchmark: memories through real Celery workers (Redis broker, PostgreSQL, the
zero-latency OpenAI stub reached through the real `openai` client), beside a no-op Celery task
through the same broker and the same workers — figures of one run, compared as ratios.

    .venv/bin/python -m common.embedded_postgres run -- .venv/bin/python bench/pipeline.py \
        [--procs 1,2] [--memories 1000] [--noops 2000] [--steady-rate 8] [--steady-seconds 15]

The project's migrations need pgvector, so the database is the embedded PostgreSQL's (`make
bench` starts it; DATABASE_URL or BENCH_DATABASE_URL must name a server with pgvector). The
broker is a private redis-server on a free port, the stub its own process; both are stopped at
the end, and so is every worker (its whole process group). Not a test.

For each number of worker processes (`--procs`; one worker with `--concurrency=N`, prefork, or
with `--layout workers` N workers of one process each):
1. floor: `--noops` no-op tasks (bench/noop_tasks.py) published as fast as one producer can,
   timed from the first publish until the broker holds none, queued or unacknowledged; the
   median of `--floor-repeats` such runs;
2. pipeline: `--memories` memories created through `memories.services.memory_create` (as the API
   does), timed from the first memory's `created_at` to the last `enriched_at`;
then, with the most processes, memories created at a steady `--steady-rate` per second for
`--steady-seconds`: p50/p95 of `enriched_at - created_at`. Statements, transactions and new
connections per job come from bench/statement_count.py in the worker processes; CPU per job of
each part (worker, PostgreSQL, broker, stub, this process) from /proc. With `--backlog`, the
pipeline runs are timed from a backlog instead: the memories are created while the worker
consumes nothing (Celery's cancel_consumer), and the clock starts when it consumes again.
No beat runs unless `--beat`.

The benchmark knows only the memory's enrichment status and timestamps, the service that
creates memories and the worker's command line: nothing of how enrichment works inside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from harness import bench_env, django_setup, percentile, write_results

from enrichment.testing import processes

WARM_UP_MEMORIES = 20
WARM_UP_NOOPS = 100
STALL_SECONDS = 30  # no memory enriched for this long: stop waiting, report what was done


class Stub:
    """The OpenAI stub in a process of its own (not sharing the benchmark's GIL)."""

    def __init__(self, log: Path) -> None:
        self.port = processes.free_port()
        self.process = processes.Process(
            [sys.executable, "-m", "enrichment.testing.openai_stub", "--port", str(self.port)],
            dict(os.environ),
            ready=lambda: processes.port_open(self.port),
            log=log,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(  # noqa: S310 - our own stub on loopback
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read())

    def requests(self, *, reset: bool = True) -> dict[str, int]:
        """Provider requests per endpoint since the last reset."""
        counts: dict[str, int] = {}
        for call in self._call("GET", "/_stub/calls")["calls"]:
            name = call["path"].rsplit("/", 1)[1]
            counts[name] = counts.get(name, 0) + 1
        if reset:
            self._call("POST", "/_stub/script", {"responses": [], "reset": True})
        return counts


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from its third field (state, ppid, ...), or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def tree_cpu(root: int) -> float:
    """CPU seconds of a process, of its children that have exited (reaped: cutime, cstime) and
    of its live children."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is None:
            continue
        if int(entry.name) == root:
            ticks += sum(int(f) for f in fields[11:15])
        elif int(fields[1]) == root:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def machine_cpu() -> float:
    """CPU seconds every core of the machine has spent busy (not idle or waiting on I/O)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def postmaster_pid() -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    fields = _proc_stat(backend)
    return int(fields[1]) if fields else None


class CpuMeter:
    """CPU seconds used so far by each part: the worker (parent and pool processes), PostgreSQL
    (server and backends), the broker, the stub, and this process (the load generator)."""

    def __init__(self, roots: dict[str, list[int | None]]) -> None:
        self.roots = {role: [pid for pid in pids if pid] for role, pids in roots.items()}

    def read(self) -> dict[str, float]:
        times = os.times()
        return {
            **{role: sum(map(tree_cpu, pids)) for role, pids in self.roots.items() if pids},
            "bench": times.user + times.system,
            "machine": machine_cpu(),
        }

    @staticmethod
    def per_unit(before: dict, after: dict, units: int, wall: float) -> dict:
        """CPU milliseconds per unit (task or job) by part; how many cores the benchmark's
        processes kept busy, and how many the whole machine did (other work is noise)."""
        used = {role: after[role] - before[role] for role in after}
        machine = used.pop("machine")
        return {
            "cpuMsPerUnit": {role: round(1000 * v / max(1, units), 2) for role, v in used.items()},
            "coresBusy": round(sum(used.values()) / wall, 2) if wall else None,
            "machineCoresBusy": round(machine / wall, 2) if wall else None,
        }


def worker(env: dict, *, concurrency: int, hostname: str, log: Path) -> processes.Process:
    """A worker as the app runs them (every queue of the app, prefork), plus the benchmark's
    no-op task and statement counter."""
    return processes.celery_worker(
        env, name=hostname, concurrency=concurrency, log=log, loglevel="WARNING",
        include=("bench.noop_tasks", "bench.statement_count"),
    )  # fmt: skip


def workers_start(
    env: dict, *, procs: int, layout: str, logs: Path
) -> dict[str, processes.Process]:
    """`procs` worker processes: one worker with `--concurrency=procs` ("concurrency"), or
    `procs` workers of one process each ("workers"). Started; keyed by hostname."""
    if layout == "concurrency":
        plan = {f"bench{procs}@pipeline": procs}
    else:
        plan = {f"bench{procs}-{i}@pipeline": 1 for i in range(procs)}
    started = {}
    try:
        for hostname, concurrency in plan.items():
            log = logs / f"worker-{hostname.split('@')[0]}.log"
            started[hostname] = worker(
                env, concurrency=concurrency, hostname=hostname, log=log
            ).start()
    except BaseException:
        for process in started.values():
            process.stop()
        raise
    return started


def wait_worker_ready(app, *, hostname: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not app.control.ping(destination=[hostname], timeout=0.5):
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {hostname} did not answer a ping")


class Broker:
    """What the Redis broker still holds: queued and delivered-but-unacknowledged messages."""

    # kombu's Redis transport keeps priorities 3, 6, 9 in lists of their own.
    SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

    def __init__(self, client, queues: list[str]) -> None:
        self.client, self.queues = client, queues

    def depth(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.hlen("unacked")
        for queue in self.queues:
            for suffix in self.SUFFIXES:
                pipe.llen(queue + suffix)
        return sum(pipe.execute())

    def wait_drained(self, *, timeout: float) -> float:
        """The moment (perf_counter) from which the broker has held nothing: empty in two polls
        20 ms apart (a message being moved from the queue to `unacked` is in neither)."""
        deadline = time.monotonic() + timeout
        empty_since = None
        while time.monotonic() < deadline:
            now = time.perf_counter()
            if self.depth() == 0:
                empty_since = empty_since or now
                if now - empty_since >= 0.02:
                    return empty_since
                time.sleep(0.005)
            else:
                empty_since = None
                time.sleep(0.002)
        raise TimeoutError(f"the broker still holds {self.depth()} messages")


def noops(n: int, *, app, broker: Broker, meter: CpuMeter | None = None) -> dict:
    from bench.noop_tasks import noop

    cpu = meter.read() if meter else None
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            noop.apply_async(producer=producer)
    published = time.perf_counter() - started
    finished = broker.wait_drained(timeout=120)
    elapsed = finished - started
    return {
        "tasks": n,
        "publishSeconds": round(published, 2),
        "seconds": round(elapsed, 2),
        "tasksPerSecond": round(n / elapsed, 1),
        **(meter.per_unit(cpu, meter.read(), n, elapsed) if meter else {}),
    }


def floor_median(n: int, repeats: int, **kwargs) -> dict:
    """The floor `repeats` times over; the run with the median rate, and every rate."""
    runs = sorted((noops(n, **kwargs) for _ in range(repeats)), key=lambda r: r["tasksPerSecond"])
    return {**runs[len(runs) // 2], "allTasksPerSecond": [r["tasksPerSecond"] for r in runs]}


def new_user():
    from accounts.models import User

    return User.objects.create_user(email=f"bench-{uuid.uuid4().hex[:12]}@example.com")


def create_memories(user, n: int, *, rate: float = 0) -> float:
    """`n` memories through the service the API uses; all at once, or `rate` a second."""
    from memories.services import memory_create

    started = time.perf_counter()
    for i in range(n):
        if rate:
            time.sleep(max(0.0, started + i / rate - time.perf_counter()))
        memory_create(user=user, text_content=f"Benchmark memory {i}: meeting at 9", type="note")
    return time.perf_counter() - started


def wait_enriched(user, n: int, *, timeout: float) -> int:
    from memories.models import EnrichmentStatus, Memory

    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        done = Memory.objects.filter(user=user, enrichment_status=EnrichmentStatus.ENRICHED).count()
        now = time.monotonic()
        if done >= n or now > deadline:
            return done
        if done != last:
            last, last_change = done, now
        elif now - last_change > STALL_SECONDS:
            return done
        time.sleep(0.1)


def timings(user, *, since=None) -> dict:
    from django.db.models import Count

    from memories.models import Memory

    rows = list(Memory.objects.filter(user=user).values_list("created_at", "enriched_at"))
    statuses = dict(
        Memory.objects.filter(user=user)
        .values_list("enrichment_status")
        .annotate(n=Count("id"))
        .values_list("enrichment_status", "n")
    )
    finished = [(c, e) for c, e in rows if e is not None]
    latencies = [(e - c).total_seconds() for c, e in finished]
    first = since or min(c for c, _ in rows)
    last = max((e for _, e in finished), default=first)
    elapsed = (last - first).total_seconds() or 1e-9
    return {
        "memories": len(rows),
        "enriched": len(finished),
        "statuses": statuses,
        "seconds": round(elapsed, 2),
        "jobsPerSecond": round(len(finished) / elapsed, 1),
        "p50Ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p95Ms": round(percentile(latencies, 0.95) * 1000, 1) if latencies else None,
    }


def worker_counts(redis_client, jobs: int) -> dict:
    from bench.statement_count import FIELDS, KEY

    counts = dict.fromkeys(FIELDS, 0)
    counts.update({k.decode(): int(v) for k, v in redis_client.hgetall(KEY).items()})
    redis_client.delete(KEY)
    per_job = {f"{k}PerJob": round(v / jobs, 2) for k, v in counts.items()} if jobs else {}
    return {"workerCounts": counts, **per_job}


class Consumers:
    """Stops and restarts workers' consumption of every queue (Celery remote control), so that
    a backlog can be created first and timed from the moment the workers may take it."""

    def __init__(self, app, *, hostnames: list[str], queues: list[str]) -> None:
        self.app, self.hostnames, self.queues = app, hostnames, queues

    def _control(self, command: str) -> None:
        for queue in self.queues:
            replies = getattr(self.app.control, command)(
                queue, destination=self.hostnames, reply=True, timeout=5
            )
            if len(replies) < len(self.hostnames):
                raise TimeoutError(f"{command} {queue}: {len(replies)} of the workers replied")

    def pause(self) -> None:
        self._control("cancel_consumer")

    def resume(self) -> None:
        self._control("add_consumer")


def phase(
    user, n: int, *, rate: float, broker: Broker, redis_client, stub: Stub, meter: CpuMeter,
    backlog: Consumers | None = None,
) -> dict:  # fmt: skip
    """Create `n` memories (at `rate`/s, or all at once), wait until they are enriched and the
    broker is drained; timings, per-job counts in the workers, and per-create counts here.
    With `backlog`, the worker consumes nothing while the memories are created, and the time
    runs from its restart."""
    from django.utils import timezone

    from bench import statement_count

    redis_client.delete(statement_count.KEY)
    stub.requests(reset=True)
    statement_count.snapshot(reset=True)
    if backlog:
        backlog.pause()
    cpu = meter.read()
    started = time.perf_counter()
    create_seconds = create_memories(user, n, rate=rate)
    creates = statement_count.snapshot(reset=True)
    since = None
    if backlog:
        cpu = meter.read()
        started = time.perf_counter()
        since = timezone.now()
        backlog.resume()
    wait_enriched(user, n, timeout=600)
    broker.wait_drained(timeout=60)
    cpu = meter.per_unit(cpu, meter.read(), n, time.perf_counter() - started)
    result = timings(user, since=since)
    requests = stub.requests(reset=True)
    return {
        **result,
        "arrivals": "backlog" if backlog else f"{rate}/s" if rate else "all at once",
        "createSeconds": round(create_seconds, 2),
        "createsPerSecond": round(n / create_seconds, 1),
        "statementsPerCreate": round(creates.get("statements", 0) / n, 2),
        "transactionsPerCreate": round(creates.get("transactions", 0) / n, 2),
        **worker_counts(redis_client, result["enriched"]),
        "providerRequests": requests,
        "providerRequestsPerJob": round(sum(requests.values()) / max(1, result["enriched"]), 2),
        **cpu,
    }


def warm_up(*, app, broker: Broker) -> None:
    noops(WARM_UP_NOOPS, app=app, broker=broker)
    user = new_user()
    create_memories(user, WARM_UP_MEMORIES)
    wait_enriched(user, WARM_UP_MEMORIES, timeout=120)
    broker.wait_drained(timeout=60)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def report(runs: list[dict], steady: dict | None) -> None:
    print("\nper worker processes    no-op floor    pipeline       pipeline/floor")
    for run in runs:
        print(
            f"  {run['procs']} proc{'s' if run['procs'] > 1 else ' '}              "
            f"{run['floor']['tasksPerSecond']:>7} tasks/s {run['pipeline']['jobsPerSecond']:>7} "
            f"jobs/s   {run['pipelineOverFloor']}"
        )
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        print(
            f"  {b['procs']} procs / {a['procs']} proc: floor "
            f"{ratio(b['floor']['tasksPerSecond'], a['floor']['tasksPerSecond'])}, pipeline "
            f"{ratio(b['pipeline']['jobsPerSecond'], a['pipeline']['jobsPerSecond'])}"
        )
    for run in runs:
        p = run["pipeline"]
        print(
            f"  pipeline, {run['procs']} proc(s): {p['enriched']}/{p['memories']} enriched in "
            f"{p['seconds']} s (created in {p['createSeconds']} s, {p['createsPerSecond']}/s); "
            f"per job: {p.get('statementsPerJob')} statements, {p.get('transactionsPerJob')} "
            f"transactions, {p.get('connectionsPerJob')} connections, {p.get('tasksPerJob')} "
            f"tasks, {p['providerRequestsPerJob']} provider requests; per create: "
            f"{p['statementsPerCreate']} statements, {p['transactionsPerCreate']} transactions"
        )
    for run in runs:
        for name, unit in (("floor", "task"), ("pipeline", "job")):
            cpu = run[name].get("cpuMsPerUnit")
            if cpu:
                parts = ", ".join(f"{role} {ms}" for role, ms in cpu.items())
                print(
                    f"  CPU ms per {unit}, {name}, {run['procs']} proc(s): {parts} "
                    f"({run[name]['coresBusy']} cores busy; the machine "
                    f"{run[name]['machineCoresBusy']})"
                )
    if steady:
        print(
            f"  steady {steady['arrivals']}, {steady['procs']} procs: {steady['enriched']}/"
            f"{steady['memories']} enriched, create -> enriched p50 {steady['p50Ms']} ms, "
            f"p95 {steady['p95Ms']} ms; per job: {steady.get('statementsPerJob')} statements, "
            f"{steady.get('transactionsPerJob')} transactions, "
            f"{steady.get('connectionsPerJob')} connections"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--procs", default="1,2", help="worker processes per run, comma-separated")
    parser.add_argument("--memories", type=int, default=1000, help="memories per pipeline run")
    parser.add_argument("--noops", type=int, default=2000, help="no-op tasks per floor run")
    parser.add_argument(
        "--floor-repeats", type=int, default=3, help="floor runs; the median is reported"
    )
    parser.add_argument("--steady-rate", type=float, default=8, help="memories per second")
    parser.add_argument("--steady-seconds", type=float, default=15)
    parser.add_argument(
        "--backlog",
        action="store_true",
        help="time the pipeline runs from a backlog: memories created while the worker "
        "consumes nothing, timed from its restart (not bounded by the creation rate)",
    )
    parser.add_argument(
        "--layout",
        choices=("concurrency", "workers"),
        default="concurrency",
        help="N processes as one worker with --concurrency=N (default), or N workers of one",
    )
    parser.add_argument(
        "--beat",
        action="store_true",
        help="run Celery beat beside the worker (its periodic tasks count in the per-job figures)",
    )
    parser.add_argument("--output", default="pipeline", help="name of the results file")
    args = parser.parse_args()
    if not (os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")):
        sys.exit(
            "bench/pipeline.py needs PostgreSQL with pgvector: run it under "
            "`.venv/bin/python -m common.embedded_postgres run -- ...` (as `make bench` does) "
            "or set BENCH_DATABASE_URL"
        )

    import redis

    logs = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    broker_server = processes.RedisServer().start()
    stub = Stub(logs / "stub.log")
    current: dict[str, processes.Process] = {}
    beat: processes.Process | None = None
    try:
        stub.process.start()
        env = bench_env(
            REDIS_URL=broker_server.url,
            AI_PROVIDER="openai",
            OPENAI_API_KEY="sk-bench-not-a-real-key",
            OPENAI_BASE_URL=stub.base_url,
            BENCH_STATEMENT_COUNT=broker_server.url,
        )
        django_setup(env)
        from django.db import connection

        from bench import noop_tasks, statement_count  # noqa: F401 - registers bench.noop
        from memoryconnector.celery import app

        # Other benchmarks leave memories with waiting jobs in this database (nothing enriches
        # them there); a worker here would take those too and count them in this run's figures.
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE memories_memory CASCADE")

        statement_count.install()
        redis_client = redis.Redis.from_url(broker_server.url)
        broker = Broker(redis_client, list(app.amqp.queues.keys()))
        postgres = postmaster_pid()
        if args.beat:
            beat = processes.celery_beat(
                env, schedule=logs / "celerybeat-schedule", log=logs / "beat.log"
            ).start()
        steady_n = round(args.steady_rate * args.steady_seconds)
        procs_list = [int(p) for p in args.procs.split(",")]
        runs, steady = [], None
        for procs in procs_list:
            current = workers_start(env, procs=procs, layout=args.layout, logs=logs)
            for hostname in current:
                wait_worker_ready(app, hostname=hostname)
            warm_up(app=app, broker=broker)
            meter = CpuMeter(
                {
                    "worker": [process.proc.pid for process in current.values()],
                    "postgres": [postgres],
                    "broker": [broker_server.proc.pid],
                    "stub": [stub.process.proc.pid],
                }
            )
            floor = floor_median(
                args.noops, args.floor_repeats, app=app, broker=broker, meter=meter
            )
            print(f"{procs} proc(s): no-op floor {floor['tasksPerSecond']} tasks/s", flush=True)
            pipeline = phase(
                new_user(), args.memories, rate=0, broker=broker, redis_client=redis_client,
                stub=stub, meter=meter,
                backlog=Consumers(app, hostnames=list(current), queues=broker.queues)
                if args.backlog else None,
            )  # fmt: skip
            print(f"{procs} proc(s): pipeline {pipeline['jobsPerSecond']} jobs/s", flush=True)
            runs.append(
                {
                    "procs": procs,
                    "floor": floor,
                    "pipeline": pipeline,
                    "pipelineOverFloor": ratio(pipeline["jobsPerSecond"], floor["tasksPerSecond"]),
                }
            )
            if procs == max(procs_list) and steady_n:
                steady = {
                    "procs": procs,
                    **phase(
                        new_user(), steady_n, rate=args.steady_rate, broker=broker,
                        redis_client=redis_client, stub=stub, meter=meter,
                    ),
                }  # fmt: skip
                print(f"{procs} proc(s): steady p50 {steady['p50Ms']} ms", flush=True)
            for process in current.values():
                process.stop()
            current = {}
    finally:
        for process in current.values():
            process.stop()
        if beat is not None:
            beat.stop()
        stub.process.stop()
        broker_server.stop()
    report(runs, steady)
    first, last = runs[0], runs[-1]
    write_results(
        args.output,
        {
            "workerLayout": "one Celery worker, prefork, --concurrency=procs, every app queue"
            if args.layout == "concurrency"
            else "procs Celery workers, prefork, --concurrency=1 each, every app queue",
            "stub": "enrichment.testing.openai_stub, zero latency, its own process",
            "beat": args.beat,
            "runs": runs,
            "steady": steady,
            "scaling": {
                "floor": ratio(last["floor"]["tasksPerSecond"], first["floor"]["tasksPerSecond"]),
                "pipeline": ratio(
                    last["pipeline"]["jobsPerSecond"], first["pipeline"]["jobsPerSecond"]
                ),
            },
            "loadAverageAtEnd": [round(v, 2) for v in os.getloadavg()],
            "logs": str(logs),
        },
    )
    print(f"worker and stub logs: {logs}")


if __name__ == "__main__":
    main()
