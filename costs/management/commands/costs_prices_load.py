"""manage.py costs_prices_load: add the prices of costs/data/prices.json missing from the table."""

from django.core.management.base import CommandError

from common import commands
from costs.prices import PRICES_FILE, prices_load


class Command(commands.Command):
    help = (
        "Load prices from the data file (USD per 1M tokens) into the price table; entries "
        "already there (same provider, model, effective_from) are kept as they are."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--file",
            type=commands.existing_file,
            default=PRICES_FILE,
            help="Default: the repo's file.",
        )

    def handle(self, *args, file, **options):
        try:
            created, existing = prices_load(path=file)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable, not JSON, or entries without the fields the file format needs.
            raise CommandError(
                f"{file}: not a usable price file: {type(exc).__name__}: {exc}"
            ) from None
        self.stdout.write(f"{created} price(s) added, {existing} already present.")
