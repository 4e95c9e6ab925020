"""Seed the price table from costs/data/prices.json (USD per 1M tokens, stored as cents)."""

from django.db import migrations


def seed(apps, schema_editor):
    from costs.prices import prices_load

    prices_load(model_class=apps.get_model("costs", "ModelPrice"))


class Migration(migrations.Migration):
    dependencies = [("costs", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
