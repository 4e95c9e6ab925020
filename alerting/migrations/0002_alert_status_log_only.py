"""Alert status `log_only`: an alert only the log has was never delivered to anyone. Alerts
recorded as delivered with no delivery channel (email, Slack) among their channels become
log_only, so the history tells the truth too."""

from django.db import migrations, models

# The delivery channels when this migration was written (alerting.channels, `delivers`).
DELIVERING = {"email", "slack"}


def mark_log_only(apps, schema_editor):
    Alert = apps.get_model("alerting", "Alert")
    log_only = [
        pk
        for pk, channels in Alert.objects.filter(status="delivered")
        .values_list("pk", "delivered_channels")
        .iterator()
        if not DELIVERING & set(channels or [])
    ]
    for start in range(0, len(log_only), 1000):
        Alert.objects.filter(pk__in=log_only[start : start + 1000]).update(
            status="log_only", delivered_at=None
        )


class Migration(migrations.Migration):
    dependencies = [
        ("alerting", "0001_initial"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="alert",
            name="alert_status_valid",
        ),
        migrations.AlterField(
            model_name="alert",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("delivered", "Delivered"),
                    ("log_only", "Log only"),
                    ("failed", "Failed"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.AddConstraint(
            model_name="alert",
            constraint=models.CheckConstraint(
                condition=models.Q(("status__in", ["pending", "delivered", "log_only", "failed"])),
                name="alert_status_valid",
            ),
        ),
        migrations.RunPython(mark_log_only, migrations.RunPython.noop),
    ]
