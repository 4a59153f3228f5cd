"""Roles, permission checks and the audit trail: written once, used by every app."""
from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest

from .models import AuditEvent, Role


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


# Role and token look-ups are cached briefly per process: a viewer makes hundreds of requests a
# minute. A role change or token revocation reaches other processes within this many seconds.
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
    if request is None:
        return None
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
    """Append one event to the audit log.

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
    """The active user behind a bearer token, or None. Records when the token was last used."""
    from django.utils import timezone

    from .models import ApiToken

    if not key.startswith(ApiToken.PREFIX) or len(key) > 100:
        return None
    cache_key = f"token:{ApiToken.hash_key(key)}"
    user = cache.get(cache_key)
    if user is not None:
        return user
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=ApiToken.hash_key(key), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    cache.set(cache_key, token.user, ROLE_CACHE_SECONDS)
    return token.user


def revoke_token(token) -> None:
    from django.utils import timezone

    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    cache.delete(f"token:{token.key_hash}")
