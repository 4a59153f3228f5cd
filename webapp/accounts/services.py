"""Roles, permission checks and the audit trail: written once, used by every app."""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import resolve_url
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from . import audit_chain
from .models import AuditChainHead, AuditEvent, Role


def has_role(user: AbstractBaseUser | AnonymousUser, *roles: str) -> bool:
    """True when an active, logged-in user belongs to one of the role groups.

    Superusers count as admins.
    """
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    if user.is_superuser and Role.ADMIN in roles:
        return True
    names = getattr(user, "_radloop_roles", None)
    if names is None:
        names = cache.get(_roles_key(user.pk))
        if names is None:
            names = set(user.groups.values_list("name", flat=True))
            cache.set(_roles_key(user.pk), names, ROLE_CACHE_SECONDS)
        user._radloop_roles = names
    return bool(names.intersection(roles))


# Role look-ups are cached briefly per process: a viewer makes hundreds of requests a minute. A role
# change reaches other processes within this many seconds (API tokens are not cached: see user_for_token).
ROLE_CACHE_SECONDS = 30


def _roles_key(user_id) -> str:
    return f"roles:{user_id}"


def forget_roles(user_id) -> None:
    cache.delete(_roles_key(user_id))


def can_upload(user) -> bool:
    """Admins, and the uploader role (a PACS or a data manager's script)."""
    return has_role(user, Role.ADMIN, Role.UPLOADER)


def is_admin(user) -> bool:
    return has_role(user, Role.ADMIN)


def can_read_studies(user) -> bool:
    return has_role(user, Role.ADMIN, Role.RADIOLOGIST)


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address for the audit log: X-Real-IP from our own proxy when BEHIND_PROXY."""
    if request is None:
        return None
    if settings.BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_REAL_IP", "").strip()
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            pass
    return request.META.get("REMOTE_ADDR") or None


def audit(
    actor,
    action: str,
    *,
    obj: Any = None,
    object_type: str = "",
    object_id: str = "",
    details: dict | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event to the audit log (chained to the previous one: see AuditEvent.save).

    Call it last in a transaction: the entry holds the chain head's row lock until the commit.
    ``obj`` may be any model instance with an ``audit_ref()`` method returning (type, id);
    otherwise pass ``object_type``/``object_id`` explicitly.
    """
    if obj is not None:
        object_type, object_id = obj.audit_ref()
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_username=user.get_username() if user else "",
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        details=details or {},
        ip_address=client_ip(request),
    )


@dataclass
class ChainCheck:
    ok: bool
    count: int  # entries verified (all of them when ok; those before the first broken one otherwise)
    head_hash: str
    problem: str = ""


def verify_audit_chain() -> ChainCheck:
    """Walk the audit log in chain order: numbers without gaps, each entry's hash recomputed from its
    content and the previous hash, and the last entry equal to the chain head. Names the first fault."""
    prev, expected, count = audit_chain.GENESIS_HASH, 1, 0
    fields = ("id", "seq", "created_at", "actor_username", "action", "object_type", "object_id", "details",
              "ip_address", "prev_hash", "entry_hash")
    for event in AuditEvent.objects.order_by("seq").only(*fields).iterator(chunk_size=2000):
        where = f"entry id={event.pk} (#{event.seq}, {event.action})"
        if event.seq != expected:
            return ChainCheck(False, count, prev, f"entries #{expected} to #{event.seq - 1} are missing, "
                                                  f"before {where}")
        if event.prev_hash != prev:
            return ChainCheck(False, count, prev, f"{where} does not follow the entry before it "
                                                  "(that entry was changed or removed)")
        if audit_chain.hash_of(event, prev) != event.entry_hash:
            return ChainCheck(False, count, prev, f"{where} was changed after it was written")
        prev, expected, count = event.entry_hash, expected + 1, count + 1
    head = AuditChainHead.objects.filter(pk=1).first()
    head_seq, head_hash = (head.last_seq, head.last_hash) if head else (0, audit_chain.GENESIS_HASH)
    if (head_seq, head_hash) != (count, prev):
        return ChainCheck(False, count, prev, f"the chain head says #{head_seq} but the log ends at #{count}: "
                                              "entries at the end were removed or the head was changed")
    return ChainCheck(True, count, prev)


def audit_read_once(request: HttpRequest, action: str, *, object_type: str, object_id, details: dict | None = None,
                    window_seconds: int = 600, vary: str = "") -> None:
    """Audit a read once per user, object, action (and ``vary``, e.g. a digest of what a page
    listed) per ``window_seconds``: a case list loads 25 thumbnails, a viewer 500 frames, the jobs
    page reloads every 5 s; one event says who saw which patient's data, and when."""
    if vary:
        vary = hashlib.sha256(vary.encode()).hexdigest()[:16]
    key = f"audit:{action}:{request.user.pk}:{object_type}:{object_id}:{vary}"
    if cache.add(key, 1, window_seconds):
        audit(request.user, action, object_type=object_type, object_id=str(object_id), details=details,
              request=request)


@transaction.atomic
def ensure_user(username: str, password: str, role: str, *, email: str = "") -> tuple[User, bool]:
    """Create (or leave alone) a user with one role. Returns (user, created).

    An existing user keeps its password: running the demo set-up twice changes nothing.
    """
    group, _ = Group.objects.get_or_create(name=role)
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    if created:
        user.set_password(password)
        user.is_staff = role == Role.ADMIN
        user.save()
    user.groups.add(group)
    return user, created


def ensure_role_groups() -> None:
    for role in Role:
        Group.objects.get_or_create(name=role.value)


def user_for_token(key: str):
    """The active user behind a usable bearer token (not revoked, not expired), or None.

    Not cached: one indexed query per request, so a revocation or an expiry counts at once in
    every process. Records when the token was last used (at most once a minute).
    """
    from .models import ApiToken

    if not key.startswith(ApiToken.PREFIX) or len(key) > 100:
        return None
    now = timezone.now()
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=ApiToken.hash_key(key), revoked_at__isnull=True, expires_at__gt=now, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def issue_token(user, name: str, *, days: int | None = None, actor=None, request=None):
    """A new bearer token for ``user``; returns (row, secret). The secret is shown once, never stored."""
    from .models import ApiToken

    with transaction.atomic():
        token, key = ApiToken.issue(user, name, days=days)
        audit(actor, "accounts.api_token.created", obj=token, request=request,
              details={"user": user.get_username(), "name": token.name, "expires_at": token.expires_at.isoformat()})
    return token, key


def revoke_token(token, *, actor=None, request=None) -> bool:
    """Revoke a token (effective at once: tokens are not cached). False if it was already revoked."""
    from .models import ApiToken

    with transaction.atomic():
        changed = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        token.refresh_from_db(fields=["revoked_at"])
        if changed:
            audit(actor, "accounts.api_token.revoked", obj=token, request=request,
                  details={"user": token.user.get_username(), "name": token.name})
    return bool(changed)


def safe_next(request: HttpRequest, fallback: str) -> str:
    """The request's ``next`` (POST, then GET) if it points to this site, else ``fallback``.

    ``//evil.example``, ``https://evil.example`` and other hosts or schemes are refused.
    """
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return resolve_url(fallback)
