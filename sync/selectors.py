"""Pull: a user's memory changes since a cursor, as WatermelonDB raw records.

The cursor (`timestamp` on the wire) is the user's change counter plus one: "the first change
number this device has not seen". The counter is read before the changes, in an earlier
statement; every change numbered at or below it had committed before that read (the trigger
numbers a user's changes in commit order), so the later statement sees all of them. A change
that commits after the read has a higher number and comes with the next pull. Reads only: no
lock, no clock time, and the cost follows the number of changes, not the size of the table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.errors import DomainError
from memories.models import Memory

from .models import MemoryChange, SyncClock, SyncHorizon
from .records import TABLE, memory_to_raw


class ResyncRequiredError(DomainError):
    status_code = 410
    code = "resync_required"


def sync_cursor(*, user) -> int:
    """The cursor a pull taken now returns: one past the user's last committed change."""
    seq = SyncClock.objects.filter(user=user).values_list("seq", flat=True).first()
    return (seq or 0) + 1


def sync_horizon_check(*, user, last_pulled_at: int) -> None:
    """410 when tombstones this device may not have seen were purged."""
    floor = SyncHorizon.objects.filter(user=user).values_list("purged_below", flat=True).first()
    if floor and last_pulled_at < floor:
        raise ResyncRequiredError(
            "Deleted memories this device has not seen were purged; "
            "sync again from scratch (last_pulled_at=null) after clearing local data.",
            details={"lastPulledAt": last_pulled_at, "oldestAllowed": floor},
        )


@dataclass
class PullResult:
    timestamp: int
    updated: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def as_wire(self) -> dict[str, Any]:
        changes = {TABLE: {"created": [], "updated": self.updated, "deleted": self.deleted}}
        return {"changes": changes, "timestamp": self.timestamp}


def sync_pull(*, user, last_pulled_at: int | None, full: bool = False) -> PullResult:
    """Changes since `last_pulled_at` (None or 0: every live memory, no tombstones).

    Every live record is sent as `updated` (clients pass `sendCreatedAsUpdated: true`).
    `full` (a client migration that added our table or a column of it): every live record,
    plus the deletions since `last_pulled_at`."""
    incremental = bool(last_pulled_at)
    if incremental:
        sync_horizon_check(user=user, last_pulled_at=last_pulled_at)
    # First the cursor, then the rows: see the module's docstring.
    result = PullResult(timestamp=sync_cursor(user=user))
    changed: list = []
    if incremental:
        changed = list(
            MemoryChange.objects.filter(user=user, seq__gte=last_pulled_at).values_list(
                "memory_id", flat=True
            )
        )
    live = Memory.objects.alive().filter(user=user).order_by("created_at", "id")
    if incremental and not full:
        live = live.filter(pk__in=changed)
    result.updated = [memory_to_raw(memory) for memory in live]
    if incremental:
        # Changed, and not live when read after the change list: deleted (or purged by staff).
        sent = {raw["id"] for raw in result.updated}
        result.deleted = [str(pk) for pk in changed if str(pk) not in sent]
    return result
