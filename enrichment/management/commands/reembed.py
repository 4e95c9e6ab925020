"""Re-embed, here and now, the memories whose embedding another model made."""

from __future__ import annotations

import sys

from common import commands
from enrichment import services
from enrichment.selectors import embeddings_stale


class Command(commands.Command):
    help = (
        "Re-embed the memories whose embedding another model (or other dimensions) made, after "
        "a change of OPENAI_EMBEDDING_MODEL or EMBEDDING_DIMENSIONS, inline with a progress bar. "
        "Every call goes through the AI budget; it stops at the first refusal or provider error. "
        "Beat does the same in the background (enrichment-reembed) while the queue is idle."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--limit", type=commands.positive_int, default=None, help="at most this many"
        )

    def handle(self, *args, **options):
        total = embeddings_stale().count()
        if options["limit"]:
            total = min(total, options["limit"])
        if not total:
            self.stdout.write("Every embedding is of the active model: nothing to do.")
            return
        width = 30

        def progress(done: int) -> None:
            if sys.stdout.isatty() or done == total or done % 50 == 0:
                filled = int(width * done / total)
                self.stdout.write(
                    f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
                    ending="" if done < total and sys.stdout.isatty() else "\n",
                )

        result = services.embeddings_refresh(limit=total, when_idle=False, progress=progress)
        left = embeddings_stale().count()
        stopped = f" Stopped: {result.stopped}." if result.stopped else ""
        self.stdout.write(f"Re-embedded {result.done} memories; {left} left.{stopped}")
