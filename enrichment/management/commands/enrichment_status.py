"""Queue, workers and breakers at a glance."""

from django.core.management.base import BaseCommand

from costs import selectors as cost_selectors
from enrichment import selectors


class Command(BaseCommand):
    help = "Show the enrichment queue, live workers and both circuit breakers."

    def handle(self, *args, **options):
        status = selectors.worker_status()
        worker, queue = status["worker"], status["queue"]
        self.stdout.write(
            f"Processing enabled: {'yes' if worker['enabled'] else 'NO'}    "
            f"provider: {worker['provider']}    sweep every {worker['pollIntervalMs']} ms"
        )
        self.stdout.write(
            "Queue: {pending} pending (of which {deferred} deferred), {processing} processing, "
            "{completedToday} completed today, {failedToday} failed today".format(**queue)
        )
        for reason, deferred in queue["deferredByReason"].items():
            until = f" until {deferred['until']:%Y-%m-%d %H:%M %Z}" if deferred["until"] else ""
            self.stdout.write(f"  deferred for {reason}: {deferred['count']}{until}")
        reembedding = status["reembedding"]
        if reembedding["pending"]:
            self.stdout.write(
                f"Re-embedding: {reembedding['pending']} memories still embedded by another "
                f"model than {reembedding['model']} (in the background, or manage.py reembed)"
            )
        if worker["liveWorkers"]:
            for live in worker["liveWorkers"]:
                self.stdout.write(
                    f"Worker {live['hostname']} (pid {live['pid']}): last heartbeat "
                    f"{live['lastSeen']:%H:%M:%S}, {live['jobsDone']} job(s) done"
                )
        else:
            self.stdout.write("Workers: none alive (no heartbeat in the last 3 intervals)")
        breaker = cost_selectors.circuit_breaker_status()
        provider = breaker["providerBreaker"]
        self.stdout.write(
            f"Budget breaker: {breaker['state']} — {breaker['dailySpendCents']} of "
            f"{breaker['budgetCents']} cents ({breaker['percentUsed']} %), resets "
            f"{breaker['resetsAt']:%Y-%m-%d %H:%M %Z}"
        )
        self.stdout.write(
            f"Provider breaker: {provider['state']} "
            f"({provider['consecutiveFailures']} consecutive failure(s))"
        )
