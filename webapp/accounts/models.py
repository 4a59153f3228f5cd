"""Roles and the append-only audit log."""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from . import audit_chain


class Role(models.TextChoices):
    """Roles are Django groups with these names."""

    ADMIN = "admin", "Admin"
    RADIOLOGIST = "radiologist", "Radiologist"
    UPLOADER = "uploader", "Uploader (stores studies, e.g. a PACS; cannot read)"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: ARG002
        raise PermissionError("the audit log is append-only")

    def delete(self):
        raise PermissionError("the audit log is append-only")

    def bulk_create(self, *args, **kwargs):  # noqa: ARG002
        raise PermissionError("audit events are chained one by one: use audit() or save()")


class AuditChainHead(models.Model):
    """The end of the audit log's hash chain (one row, id 1): the last entry's number and hash.

    Every new entry locks this row (SELECT ... FOR UPDATE; SQLite's write lock does the same) in
    the transaction that inserts the entry, so concurrent writers take turns and the chain cannot
    fork. It also lets ``verify_audit`` notice entries removed from the end of the log.
    """

    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=audit_chain.GENESIS_HASH)

    def __str__(self) -> str:
        return f"audit chain head #{self.last_seq} {self.last_hash[:12]}"


class AuditEvent(models.Model):
    """One human (or system) action: who, when, what, on which object, with details.

    Append-only: rows are never updated or deleted through the ORM.
    Action names are dotted: ``archive.study.viewed``, ``archive.upload.file_rejected``.
    Tamper-evident: ``seq`` numbers the entries 1, 2, 3, ... and ``entry_hash`` covers the entry's
    content and the previous entry's hash (see audit_chain.py); ``manage.py verify_audit`` checks it.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_username = models.CharField(max_length=150, blank=True)  # kept if the user is deleted
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=128, blank=True, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    seq = models.BigIntegerField(unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, editable=False)
    entry_hash = models.CharField(max_length=64, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action} {self.object_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("the audit log is append-only")
        # Store exactly what is hashed: JSON-native details, a normalised IP address, a timestamp
        # with the precision the database keeps (microseconds).
        self.details = json.loads(json.dumps(self.details if self.details is not None else {}))
        if self.ip_address:
            self.ip_address = self._meta.get_field("ip_address").get_prep_value(self.ip_address)
        self.created_at = self.created_at or timezone.now()
        with transaction.atomic(using=kwargs.get("using")):
            head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
            self.seq = head.last_seq + 1
            self.prev_hash = head.last_hash
            self.entry_hash = audit_chain.hash_of(self, self.prev_hash)
            super().save(*args, **kwargs)
            AuditChainHead.objects.filter(pk=1).update(last_seq=self.seq, last_hash=self.entry_hash)

    def delete(self, *args, **kwargs):
        raise PermissionError("the audit log is append-only")


class ApiToken(models.Model):
    """A bearer token for scripts and PACS (``Authorization: Bearer <token>``).

    Acts as its user, with the user's roles. Only a hash is stored; the token is shown once.
    """

    PREFIX = "rlt_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str, *, days: int | None = None) -> tuple["ApiToken", str]:
        """Create a token valid for ``days`` (default API_TOKEN_DAYS); returns (row, secret).

        The secret is not stored. Use accounts.services.issue_token, which also audits.
        """
        days = settings.API_TOKEN_DAYS if days is None else days
        if not 1 <= days <= 3650:
            raise ValueError("a token is valid for 1 to 3650 days")
        key = cls.PREFIX + secrets.token_urlsafe(32)
        expires_at = timezone.now() + timedelta(days=days)
        return cls.objects.create(user=user, name=name, key_hash=cls.hash_key(key), expires_at=expires_at), key

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and not self.is_expired

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired else "active"

    def audit_ref(self) -> tuple[str, str]:
        return "api_token", str(self.pk)
