"""Issue a bearer token for a user (scripts, PACS). The token is printed once and never stored."""
import secrets

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.models import Role
from webapp.accounts.services import ensure_user, issue_token


class Command(BaseCommand):
    help = ("Create an API token: `create_api_token USERNAME --name 'PACS' [--days 90]` "
            "(add --role uploader to create the user). Revoke it with revoke_api_token.")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="api")
        parser.add_argument("--role", choices=[r.value for r in Role], help="create the user with this role if missing")
        parser.add_argument("--days", type=int, default=None,
                            help=f"valid for this many days (default API_TOKEN_DAYS = {settings.API_TOKEN_DAYS})")

    def handle(self, *args, **options):
        days = options["days"]
        if days is not None and not 1 <= days <= 3650:
            raise CommandError("--days must be between 1 and 3650")
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            if not options["role"]:
                raise CommandError(f"no user {options['username']!r}; pass --role to create one")
            # A token-only account: nobody knows its password.
            user, _ = ensure_user(options["username"], secrets.token_urlsafe(32), options["role"])
        token, key = issue_token(user, options["name"], days=days)
        self.stderr.write(f"token {token.pk} for {user.username}, expires {token.expires_at:%Y-%m-%d %H:%M} UTC")
        self.stdout.write(key)
