"""Costs knows no memories: the ledger and reservations keep a memory's UUID as a plain column.

0001_initial now declares those columns as plain UUIDs. A database migrated with the earlier
0001 still has foreign-key constraints on them: drop them here (the columns and their indexes
stay as they are)."""

from django.db import migrations

TABLES = ("ai_cost_tracking", "costs_budgetreservation")


def drop_memory_foreign_keys(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for table in TABLES:
            constraints = connection.introspection.get_constraints(cursor, table)
            for name, info in constraints.items():
                if info["foreign_key"] and info["foreign_key"][0] == "memories_memory":
                    schema_editor.execute(
                        f"ALTER TABLE {schema_editor.quote_name(table)} "
                        f"DROP CONSTRAINT {schema_editor.quote_name(name)}"
                    )


class Migration(migrations.Migration):
    dependencies = [("costs", "0003_daily_cost_totals")]

    operations = [migrations.RunPython(drop_memory_foreign_keys, migrations.RunPython.noop)]
