"""Change tracking for offline sync: a per-user change counter and, per memory, the counter
value of its last change. Both are written by a PostgreSQL trigger on the memories table at
COMMIT time (see migrations/0001_initial.py), never by application code, so every writer —
the API, enrichment, the admin, a bulk update — is tracked without knowing about sync."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SyncClock(models.Model):
    """The user's change counter: the number of the user's last committed memory change.

    The trigger takes the next number while holding this row's lock until its transaction
    commits, so one user's changes commit in number order: a pull that reads `seq` = n has
    every change numbered <= n already visible."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    seq = models.BigIntegerField(default=0)

    class Meta:
        db_table = "sync_clock"

    def __str__(self) -> str:
        return f"{self.user_id}@{self.seq}"


class MemoryChange(models.Model):
    """The number of a memory's last change (create, edit, enrichment, tombstone, delete).

    `memory_id` is a plain column: the row outlives a hard-deleted memory, which a pull then
    reports as deleted."""

    memory_id = models.UUIDField(primary_key=True)
    # No index of its own: (user, seq) below serves every lookup by user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    seq = models.BigIntegerField()

    class Meta:
        db_table = "sync_memory_change"
        indexes = [models.Index(fields=["user", "seq"], name="sync_change_user_seq")]

    def __str__(self) -> str:
        return f"{self.memory_id}@{self.seq}"


class SyncHorizon(models.Model):
    """Changes numbered below `purged_below` may have lost their tombstones to the purge: a
    device whose cursor is older must resync from scratch (410)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    purged_below = models.BigIntegerField(default=0)

    class Meta:
        db_table = "sync_horizon"

    def __str__(self) -> str:
        return f"{self.user_id}<{self.purged_below}"
