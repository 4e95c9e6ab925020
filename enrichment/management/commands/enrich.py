"""Dispatch or run enrichment jobs from the command line."""

from __future__ import annotations

import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db.models import Q

from common import commands
from enrichment import services
from enrichment.models import EnrichmentJob, JobStatus
from memories.models import Memory


class Command(commands.Command):
    help = (
        "Run the enrichment sweep now (like POST /api/v1/admin/enrichment-worker/trigger), or "
        "with --inline process the jobs right here without a worker."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--memory",
            type=commands.uuid_type,
            help="only this memory (UUID); queues it if needed",
        )
        parser.add_argument("--user", help="only this user's memories (email)")
        parser.add_argument("--retry-failed", action="store_true", help="queue failed jobs again")
        parser.add_argument("--inline", action="store_true", help="process here, no worker")
        parser.add_argument("--dry-run", action="store_true", help="show what would run")
        parser.add_argument(
            "--limit", type=commands.positive_int, default=None, help="at most this many jobs"
        )
        parser.add_argument(
            "--batch-api",
            action="store_true",
            help="embed memories that can wait (another model's embedding, or none and no job) "
            "through OpenAI's Batch API at the batch prices; results within 24 h",
        )
        parser.add_argument(
            "--status", action="store_true", help="with --batch-api: list the unfinished batches"
        )

    def _scope(self, options):
        memories = Memory.objects.alive()
        if options["memory"]:
            memories = memories.filter(pk=options["memory"])
            if not memories.exists():
                raise CommandError(f"No live memory {options['memory']}")
        if options["user"]:
            if not get_user_model().objects.filter(email__iexact=options["user"]).exists():
                raise CommandError(f"No user with email {options['user']!r}")
            memories = memories.filter(user__email__iexact=options["user"])
        return memories

    def handle(self, *args, **options):
        if options["batch_api"]:
            return self._batch_api(options)
        if options["status"]:
            raise CommandError("--status lists the Batch API's batches: use it with --batch-api")
        scoped = bool(options["memory"] or options["user"])
        memories = self._scope(options)
        jobs = (
            EnrichmentJob.objects.filter(memory__in=memories) if scoped else EnrichmentJob.objects
        )
        if options["dry_run"]:
            return self._dry_run(jobs, options)
        if options["retry_failed"]:
            retried = services.jobs_retry(queryset=jobs.filter(status=JobStatus.FAILED))
            self.stdout.write(f"Queued {retried} failed job(s) again.")
        if options["memory"]:
            queued = services.memories_enrich_again(
                memories=memories.filter(enrichment_status__in=["failed", "enriched"])
            )
            if queued:
                self.stdout.write(f"Queued memory {options['memory']} again.")
        if options["inline"]:
            return self._inline(jobs, options)
        result = services.jobs_sweep(limit=options["limit"], jobs=jobs if scoped else None)
        self.stdout.write(
            f"Sweep: {result.dispatched} job(s) dispatched, {result.requeued} re-queued, "
            f"{result.failed} failed, {result.reservations_expired} expired reservation(s) "
            "charged unreconciled."
        )

    def _waiting(self, jobs):
        return jobs.filter(status__in=services.WAITING_STATUSES).filter(
            Q(not_before__isnull=True) | Q(not_before__lte=services.timezone.now())
        )

    def _dry_run(self, jobs, options):
        waiting = self._waiting(jobs).order_by("id")
        if options["limit"]:
            waiting = waiting[: options["limit"]]
        rows = list(waiting.values_list("pk", "status", "memory_id", "attempts"))
        for pk, status, memory_id, attempts in rows:
            self.stdout.write(f"would run job {pk} ({status}, attempts {attempts}) for {memory_id}")
        failed = jobs.filter(status=JobStatus.FAILED).count()
        self.stdout.write(f"{len(rows)} job(s) due; {failed} failed (use --retry-failed).")

    def _inline(self, jobs, options):
        ids = list(self._waiting(jobs).order_by("id").values_list("pk", flat=True))
        if options["limit"]:
            ids = ids[: options["limit"]]
        outcomes: dict[str, int] = {}
        total = len(ids)
        size = max(1, settings.ENRICHMENT_BATCH_SIZE)
        for start in range(0, total, size):
            chunk = ids[start : start + size]
            ran = services.jobs_process(
                job_ids=chunk, more=False, worker="manage.py enrich --inline"
            )
            for job_id in chunk:  # in batches, as a worker runs them
                outcome = ran.get(job_id, "not_claimed")
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            done = start + len(chunk)
            if sys.stdout.isatty() or total <= 50 or done == total or done % 50 < len(chunk):
                width = 30
                filled = int(width * done / total)
                self.stdout.write(
                    f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
                    ending="" if done < total and sys.stdout.isatty() else "\n",
                )
        summary = ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items()))
        self.stdout.write(f"Processed {total} job(s): {summary or 'nothing due'}.")

    # --- the Batch API (enrichment.batch_api) ----------------------------------------------------

    def _batch_api(self, options):
        from enrichment import batch_api
        from enrichment.selectors import batches_overview

        if options["memory"] or options["user"] or options["inline"] or options["retry_failed"]:
            raise CommandError("--batch-api takes only --limit, --dry-run and --status")
        if options["status"]:
            return self._batch_status(batches_overview())
        limit = options["limit"] or settings.OPENAI_BATCH_MAX_REQUESTS
        try:
            if options["dry_run"]:
                plan = batch_api.batch_plan(limit=limit, purpose="backfill")
                for memory_id in plan.memory_ids[:50]:
                    self.stdout.write(f"would embed memory {memory_id}")
                if plan.memories > 50:
                    self.stdout.write(f"... and {plan.memories - 50} more")
                self.stdout.write(
                    f"Would send {plan.memories} memor{'y' if plan.memories == 1 else 'ies'} "
                    f"to the Batch API ({plan.model}, ~{plan.input_tokens} input tokens): "
                    f"estimated {plan.estimate_cents}¢ at the batch prices "
                    f"({plan.synchronous_cents}¢ one by one)."
                )
                return
            sent = refused = 0
            stopped = ""
            while sent < limit:
                result = batch_api.batch_submit(limit=limit - sent, purpose="backfill")
                sent += result.sent
                refused += result.refused
                stopped = result.stopped
                if result.sent:
                    self.stdout.write(
                        f"Sent batch {result.batch_id}: {result.sent} memories, "
                        f"{result.estimate_cents}¢ held at the batch prices."
                    )
                if not result.sent or stopped:
                    break
        except batch_api.BatchApiUnavailable as exc:
            raise CommandError(str(exc)) from exc
        summary = f"Sent {sent} memories to the Batch API"
        if refused:
            summary += f"; {refused} refused"
        if stopped:
            summary += f" (stopped: {stopped})"
        self.stdout.write(
            f"{summary}. Results within 24 h, applied by the poll every "
            f"{settings.OPENAI_BATCH_POLL_SECONDS} s (--batch-api --status)."
        )

    def _batch_status(self, overview: dict):
        rows = overview["open"]
        for row in rows:
            expires = f", expires {row['expiresAt']:%Y-%m-%d %H:%M} UTC" if row["expiresAt"] else ""
            self.stdout.write(
                f"batch {row['id']} {row['providerBatchId'] or '-'} {row['status']} "
                f"({row['providerStatus'] or 'not sent'}): {row['items']} memories, "
                f"{row['requestsCompleted']} answered, {row['requestsFailed']} failed, "
                f"{row['estimateCents']}¢ held{expires}"
            )
        self.stdout.write(
            f"{len(rows)} unfinished batch(es), {overview['openItems']} memories, "
            f"{overview['heldCents']}¢ held."
        )
