"""Create the demo staff user of local development (never in production)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User

DEMO_EMAIL = "test@example.com"
DEMO_PASSWORD = "password123"  # noqa: S105 - the documented local demo account


class Command(BaseCommand):
    help = "Create (or reset) the local demo staff user test@example.com / password123."

    def handle(self, *args, **options):
        if not getattr(settings, "DEMO_USER_ALLOWED", False):
            raise CommandError("The demo user exists only with local settings.")
        user, created = User.objects.get_or_create(
            email=DEMO_EMAIL, defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(DEMO_PASSWORD)
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(f"{verb} demo staff user {DEMO_EMAIL} / {DEMO_PASSWORD}")
