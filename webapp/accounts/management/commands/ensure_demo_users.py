"""Demo users for a fresh install. Existing users are left as they are."""
from django.core.management.base import BaseCommand

from webapp.accounts.models import Role
from webapp.accounts.services import ensure_role_groups, ensure_user

DEMO_USERS = [
    ("admin", "radloop-admin", Role.ADMIN),
    ("radiologist", "radloop-reader", Role.RADIOLOGIST),
]


class Command(BaseCommand):
    help = "Create the role groups and the demo users (admin, radiologist) if missing."

    def handle(self, *args, **options):
        ensure_role_groups()
        for username, password, role in DEMO_USERS:
            _, created = ensure_user(username, password, role)
            state = "created" if created else "exists"
            self.stdout.write(f"  {role:<12} {username} / {password}   ({state})")
