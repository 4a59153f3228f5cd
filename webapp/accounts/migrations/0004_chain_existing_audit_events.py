"""Chain the audit events that existed before the hash chain (in id order), and give tokens that
existed before expiry a lifetime of API_TOKEN_DAYS from now."""
from datetime import timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone

from webapp.accounts import audit_chain


def chain_existing(apps, schema_editor):
    AuditEvent = apps.get_model("accounts", "AuditEvent")
    AuditChainHead = apps.get_model("accounts", "AuditChainHead")
    head, _ = AuditChainHead.objects.get_or_create(pk=1)
    seq, prev = head.last_seq, head.last_hash
    for event in AuditEvent.objects.filter(seq__isnull=True).order_by("id").iterator(chunk_size=2000):
        seq += 1
        event.seq = seq
        event.prev_hash = prev
        event.entry_hash = audit_chain.hash_of(event, prev)
        AuditEvent.objects.filter(pk=event.pk).update(seq=seq, prev_hash=prev, entry_hash=event.entry_hash)
        prev = event.entry_hash
    AuditChainHead.objects.filter(pk=1).update(last_seq=seq, last_hash=prev)


def expire_old_tokens_later(apps, schema_editor):
    ApiToken = apps.get_model("accounts", "ApiToken")
    days = getattr(settings, "API_TOKEN_DAYS", 90)
    ApiToken.objects.filter(expires_at__isnull=True).update(expires_at=timezone.now() + timedelta(days=days))


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_audit_chain_and_token_expiry'),
    ]

    operations = [
        migrations.RunPython(chain_existing, migrations.RunPython.noop),
        migrations.RunPython(expire_old_tokens_later, migrations.RunPython.noop),
    ]
