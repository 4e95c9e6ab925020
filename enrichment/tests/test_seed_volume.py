"""`manage.py seed_volume` (the staff-pages benchmark's data) loads rows the schema accepts."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db.models import F

from costs.models import AICostRecord, DailyCostTotal
from memories.models import Embedding, Memory

pytestmark = pytest.mark.django_db


def test_it_seeds_memories_embeddings_and_a_reconciled_ledger(settings):
    settings.DEBUG = True  # the command refuses to write synthetic data into a real database
    call_command("seed_volume", memories=12, cost_records=20, users=3, verbosity=0)
    assert Memory.objects.count() == 12
    assert Embedding.objects.count() == 12
    assert not Embedding.objects.exclude(user_id=F("memory__user_id")).exists()
    assert AICostRecord.objects.filter(reconciled=True).count() == 20
    assert sum(DailyCostTotal.objects.values_list("count", flat=True)) == 20
