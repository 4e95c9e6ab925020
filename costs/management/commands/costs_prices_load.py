"""manage.py costs_prices_load: add the prices of costs/data/prices.json missing from the table."""

from django.core.management.base import BaseCommand

from costs.prices import PRICES_FILE, prices_load


class Command(BaseCommand):
    help = (
        "Load prices from the data file (USD per 1M tokens) into the price table; entries "
        "already there (same provider, model, effective_from) are kept as they are."
    )

    def add_arguments(self, parser):
        parser.add_argument("--file", default=str(PRICES_FILE), help="Default: the repo's file.")

    def handle(self, *args, file: str, **options):
        created, existing = prices_load(path=file)
        self.stdout.write(f"{created} price(s) added, {existing} already present.")
