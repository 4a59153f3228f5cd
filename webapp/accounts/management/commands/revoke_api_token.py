"""Revoke API tokens: by id (as listed on /tokens/ and by --list), or all tokens of a user."""
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.models import ApiToken
from webapp.accounts.services import revoke_token


class Command(BaseCommand):
    help = "Revoke API tokens: `revoke_api_token ID [ID ...]`, `revoke_api_token --user USERNAME`, or `--list`."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="token ids")
        parser.add_argument("--user", help="revoke every token of this user")
        parser.add_argument("--list", action="store_true", help="list tokens and exit")

    def handle(self, *args, **options):
        tokens = ApiToken.objects.select_related("user").order_by("pk")
        if options["list"]:
            for t in tokens:
                self.stdout.write(f"{t.pk:>5}  {t.user.username:<20} {t.name:<24} {t.state:<8} "
                                  f"expires {t.expires_at:%Y-%m-%d}  last used {t.last_used_at or 'never'}")
            return
        if not options["ids"] and not options["user"]:
            raise CommandError("name token ids, or --user USERNAME (see --list)")
        if options["ids"]:
            found = list(tokens.filter(pk__in=options["ids"]))
            missing = sorted(set(options["ids"]) - {t.pk for t in found})
            if missing:
                raise CommandError(f"no token with id {', '.join(map(str, missing))}")
        else:
            found = list(tokens.filter(user__username=options["user"]))
            if not found:
                raise CommandError(f"user {options['user']!r} has no tokens")
        for token in found:
            done = revoke_token(token)
            self.stdout.write(f"token {token.pk} ({token.user.username}, {token.name}): "
                              f"{'revoked' if done else 'was already revoked'}")
