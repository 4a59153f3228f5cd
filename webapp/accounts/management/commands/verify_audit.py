"""Check the audit log's hash chain: every entry in order, unchanged, none missing."""
from django.core.management.base import BaseCommand

from webapp.accounts.services import verify_audit_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain. Prints OK and the count, or names the first broken entry (exit 1)."

    def handle(self, *args, **options):
        result = verify_audit_chain()
        if result.ok:
            self.stdout.write(self.style.SUCCESS(
                f"OK: {result.count} audit entries, chain head #{result.count} {result.head_hash}"))
            return
        self.stderr.write(self.style.ERROR(f"BROKEN: {result.problem}"))
        self.stderr.write(f"({result.count} entries before it verified)")
        raise SystemExit(1)
