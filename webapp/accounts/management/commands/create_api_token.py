"""Issue a bearer token for a user (scripts, PACS). The token is printed once and never stored."""
import secrets

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.models import ApiToken, Role
from webapp.accounts.services import audit, ensure_user


class Command(BaseCommand):
    help = "Create an API token: `create_api_token USERNAME --name 'PACS'` (add --role uploader to create the user)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="api")
        parser.add_argument("--role", choices=[r.value for r in Role], help="create the user with this role if missing")

    def handle(self, *args, **options):
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            if not options["role"]:
                raise CommandError(f"no user {options['username']!r}; pass --role to create one")
            user, _ = ensure_user(options["username"], secrets.token_urlsafe(24), options["role"])
        token, key = ApiToken.issue(user, options["name"])
        audit(None, "accounts.api_token.created", obj=token, details={"user": user.username, "name": token.name})
        self.stdout.write(key)
