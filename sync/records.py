"""The client schema we publish and the raw records of the WatermelonDB sync protocol:
a memory as a raw record (pull) and a pushed raw record as validated memory fields (push)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from common.errors import DomainError
from memories.models import Memory, MemoryType
from memories.serializers import MemoryCreateSerializer, MemoryUpdateSerializer

# Bump with every change to the columns below, and keep the old versions' columns readable:
# WatermelonDB clients send their `schema_version` and the `migration` since their last sync.
SCHEMA_VERSION = 1
TABLE = "memories"

# (column, WatermelonDB type, optional, indexed). `tags` is a JSON array in a string:
# WatermelonDB columns are scalars. Times are milliseconds since the epoch.
COLUMNS: tuple[tuple[str, str, bool, bool], ...] = (
    ("text_content", "string", False, False),
    ("type", "string", False, True),
    ("category", "string", False, True),
    ("tags", "string", False, False),
    ("enrichment_status", "string", False, True),
    ("created_at", "number", False, False),
    ("updated_at", "number", False, False),
    ("enriched_at", "number", True, False),
)
# What a device may change; every other column is the server's (enrichment, timestamps) and is
# ignored in a push.
CLIENT_COLUMNS = ("text_content", "type")


class RecordError(Exception):
    """A pushed record the server cannot accept; `details` name the field(s)."""

    def __init__(self, record_id: str, details: dict[str, list[str]]):
        super().__init__(record_id)
        self.record_id = record_id
        self.details = details


def client_schema() -> dict[str, Any]:
    """The schema a WatermelonDB app declares with `appSchema`/`tableSchema` to sync with us."""
    return {
        "version": SCHEMA_VERSION,
        "tables": [
            {
                "name": TABLE,
                "columns": [
                    {"name": name, "type": kind, "isOptional": optional, "isIndexed": indexed}
                    for name, kind, optional, indexed in COLUMNS
                ],
            }
        ],
    }


def _ms(value: dt.datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def memory_to_raw(memory: Memory) -> dict[str, Any]:
    return {
        "id": str(memory.id),
        "text_content": memory.text_content,
        "type": memory.type,
        "category": memory.category,
        "tags": json.dumps(memory.tags, ensure_ascii=False),
        "enrichment_status": memory.enrichment_status,
        "created_at": _ms(memory.created_at),
        "updated_at": _ms(memory.updated_at),
        "enriched_at": _ms(memory.enriched_at),
    }


def record_id_parse(value: Any) -> uuid.UUID:
    """A record id must be a UUID in its canonical form (lowercase, hyphenated): the server
    hands ids back in that form, so any other spelling would become a second record on the
    device. Raises ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(value)
    parsed = uuid.UUID(value)
    if str(parsed) != value:
        raise ValueError(value)
    return parsed


@dataclass(frozen=True)
class PushedFields:
    """A pushed record's client-owned fields, validated by the memories API's own rules.
    None: the record did not carry the column (an update keeps the server's value)."""

    text_content: str | None
    type: str | None


def raw_to_fields(raw: dict[str, Any], *, require_text: bool) -> PushedFields:
    """Validate a pushed raw record's client columns; raises RecordError naming the record."""
    record_id = str(raw.get("id"))
    data: dict[str, Any] = {}
    if "text_content" in raw:
        data["textContent"] = raw["text_content"]
    # WatermelonDB writes '' (or null) into a string column nobody set: that means the default.
    if raw.get("type") not in (None, ""):
        data["type"] = raw["type"]
    elif require_text:
        data["type"] = MemoryType.NOTE
    if require_text and "textContent" not in data:
        raise RecordError(record_id, {"text_content": ["This field is required."]})
    serializer_class = MemoryCreateSerializer if require_text else MemoryUpdateSerializer
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        names = {"textContent": "text_content"}
        raise RecordError(
            record_id,
            {
                names.get(field, field): [str(message) for message in messages]
                for field, messages in serializer.errors.items()
            },
        )
    valid = serializer.validated_data
    return PushedFields(text_content=valid.get("textContent"), type=valid.get("type"))


class PushInvalidError(DomainError):
    """A push the server refuses as a whole (400), naming the table, record or field."""

    code = "validation_error"


@dataclass(frozen=True)
class PushedRecord:
    id: uuid.UUID
    fields: PushedFields
    listed_as_created: bool


@dataclass(frozen=True)
class PushBatch:
    upserts: list[PushedRecord]
    deletes: list[uuid.UUID]

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


def _invalid(path: str, message: str) -> PushInvalidError:
    return PushInvalidError(f"{path}: {message}", details={path: [message]})


def changes_parse(changes: Any, *, max_records: int) -> PushBatch:
    """A pushed changes object `{memories: {created, updated, deleted}}` -> a PushBatch; any
    fault is a 400 naming its place (`memories.updated[3].id`, or the record's id)."""
    if not isinstance(changes, dict):
        raise _invalid("changes", "Must be an object of tables.")
    unknown = sorted(set(changes) - {TABLE})
    if unknown:
        raise _invalid(unknown[0], f"Unknown table; this server syncs only {TABLE!r}.")
    if TABLE not in changes:
        raise _invalid(TABLE, "Required: the changes of this table (empty lists if none).")
    table = changes[TABLE]
    if not isinstance(table, dict) or set(table) - {"created", "updated", "deleted"}:
        raise _invalid(TABLE, "Must be an object with created, updated and deleted lists.")
    missing = [name for name in ("created", "updated", "deleted") if name not in table]
    if missing:
        raise _invalid(f"{TABLE}.{missing[0]}", "Required: a list (empty if none).")
    lists = {name: table[name] for name in ("created", "updated", "deleted")}
    for name, items in lists.items():
        if not isinstance(items, list):
            raise _invalid(f"{TABLE}.{name}", "Must be a list.")
    total = sum(len(items) for items in lists.values())
    if total > max_records:
        raise PushInvalidError(
            f"A push carries at most {max_records} records; this one has {total}.",
            details={"maxRecords": max_records, "records": total},
        )
    seen: set[uuid.UUID] = set()
    upserts: list[PushedRecord] = []
    deletes: list[uuid.UUID] = []

    def parse_id(value: Any, path: str) -> uuid.UUID:
        try:
            record_id = record_id_parse(value)
        except ValueError:
            raise _invalid(
                path,
                f"Record id {value!r} is not a lowercase hyphenated UUID; "
                "use WatermelonDB's setGenerator to create UUID ids.",
            ) from None
        if record_id in seen:
            raise _invalid(path, f"Record {value} appears more than once in this push.")
        seen.add(record_id)
        return record_id

    for name in ("created", "updated"):
        for index, raw in enumerate(lists[name]):
            path = f"{TABLE}.{name}[{index}]"
            if not isinstance(raw, dict):
                raise _invalid(path, "Must be a raw record (an object).")
            record_id = parse_id(raw.get("id"), f"{path}.id")
            try:
                fields = raw_to_fields(raw, require_text=name == "created")
            except RecordError as exc:
                details = {
                    f"{TABLE}.{raw['id']}.{key}": value for key, value in exc.details.items()
                }
                first = next(iter(details.items()))
                raise PushInvalidError(f"{first[0]}: {first[1][0]}", details=details) from None
            upserts.append(PushedRecord(record_id, fields, listed_as_created=name == "created"))
    for index, value in enumerate(lists["deleted"]):
        deletes.append(parse_id(value, f"{TABLE}.deleted[{index}]"))
    return PushBatch(upserts=upserts, deletes=deletes)
