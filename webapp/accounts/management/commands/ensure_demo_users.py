"""Demo users for a fresh install, with random passwords.

A new user's password is printed once and kept in var/demo-passwords.txt (mode 0600, in a 0700
folder) so it can be looked up later; running this again leaves existing users and passwords alone
and says where they are. RADLOOP_DEMO_PASSWORD (or --password) sets the password of users it creates;
--reset-passwords gives existing demo users new ones.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.models import Role
from webapp.accounts.services import ensure_role_groups, ensure_user

DEMO_USERS = [("admin", Role.ADMIN), ("radiologist", Role.RADIOLOGIST)]
PASSWORD_FILE_NAME = "demo-passwords.txt"
# Passwords this command set before it made random ones (they were published in the README). A demo
# user that still has one gets a random password instead.
_RETIRED_DEFAULTS = {"admin": "radloop-admin", "radiologist": "radloop-reader"}


def password_file() -> Path:
    return settings.VAR_DIR / PASSWORD_FILE_NAME


def read_passwords(path: Path) -> dict[str, str]:
    """username -> password from the file (lines ``role username password``)."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and not line.startswith("#"):
                out[parts[1]] = parts[2]
    return out


def write_passwords(path: Path, roles: dict[str, str], passwords: dict[str, str]) -> None:
    """Write the file 0600 in a 0700 folder, atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# RadLoop demo logins (made by manage.py ensure_demo_users): role username password\n")
        for username, password in passwords.items():
            f.write(f"{roles.get(username, '-')} {username} {password}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class Command(BaseCommand):
    help = "Create the role groups and the demo users (admin, radiologist) with random passwords if missing."

    def add_arguments(self, parser):
        parser.add_argument("--password", default=os.environ.get("RADLOOP_DEMO_PASSWORD", ""),
                            help="password for demo users created now (default: $RADLOOP_DEMO_PASSWORD, else random)")
        parser.add_argument("--reset-passwords", action="store_true",
                            help="give existing demo users new passwords (printed once, saved in var/)")

    def handle(self, *args, **options):
        chosen = options["password"]
        if chosen:
            try:
                validate_password(chosen)
            except ValidationError as exc:
                raise CommandError("the demo password is refused: " + " ".join(exc.messages)) from None
        ensure_role_groups()
        path = password_file()
        stored = read_passwords(path)
        roles = {username: role.value for username, role in DEMO_USERS}
        for username, role in DEMO_USERS:
            user = User.objects.filter(username=username).first()
            if user is None:
                password = chosen or secrets.token_urlsafe(18)
                ensure_user(username, password, role)
                note = "created"
            elif options["reset_passwords"] or user.check_password(_RETIRED_DEFAULTS[username]):
                password = chosen or secrets.token_urlsafe(18)
                user.set_password(password)
                user.save(update_fields=["password"])
                ensure_user(username, password, role)  # and make sure it has its role
                note = "new password" if options["reset_passwords"] else "replaced the old published default password"
            else:
                ensure_user(username, "", role)  # existing: keeps its password, gets its role
                where = f"in {path}" if username in stored else "unchanged (not set by this command)"
                self.stdout.write(f"  {role.value:<12} {username:<12} exists; password {where}")
                continue
            stored[username] = password
            write_passwords(path, roles, stored)
            shown = "as given" if chosen else f"{password}   (shown once)"
            self.stdout.write(f"  {role.value:<12} {username:<12} {note}: password {shown}; kept in {path} (mode 0600)")
