"""`manage.py send_test_alert [--channel email|slack|log]`: send a real test alert now."""

from __future__ import annotations

from django.core.management.base import CommandError

from alerting.channels import CHANNEL_NAMES
from alerting.services import alert_send_test
from common import commands


class Command(commands.Command):
    help = (
        "Send a real test alert synchronously through one channel (--channel) or every "
        "channel, record it, and print each channel's outcome. Exits non-zero when a "
        "requested channel fails or is not configured."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--channel",
            choices=CHANNEL_NAMES,
            help="Only this channel (default: every configured channel).",
        )

    def handle(self, *args, channel: str | None = None, **options):
        alert, outcomes = alert_send_test(channel=channel)
        for outcome in outcomes:
            line = f"{outcome.channel}: {outcome}"
            if outcome.ok:
                self.stdout.write(self.style.SUCCESS(line))
            elif outcome.ok is None:
                self.stdout.write(self.style.WARNING(line))
            else:
                self.stdout.write(self.style.ERROR(line))
        self.stdout.write(f"Recorded as alert #{alert.pk} ({alert.dedup_key}): {alert.status}.")
        problems = [f"{o.channel} failed" for o in outcomes if o.ok is False]
        # Asking for one channel that cannot be used is a failure too.
        if channel and outcomes[0].ok is None:
            problems.append(f"{channel} is not configured")
        if problems:
            raise CommandError(f"test alert not delivered: {', '.join(problems)}")
