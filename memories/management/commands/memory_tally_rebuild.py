"""Recount the memory tally from the tables (after a bulk import or hard deletes)."""

from django.core.management.base import BaseCommand

from memories.tally import tally_rebuild


class Command(BaseCommand):
    help = "Recount memories and embeddings into the running tally the staff stats read."

    def handle(self, *args, **options):
        counts = tally_rebuild()
        self.stdout.write(
            "Tally rebuilt: {memories} memories ({memoriesToday} today), "
            "{embeddings} embeddings.".format(**counts)
        )
