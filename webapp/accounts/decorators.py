"""View decorators that check roles. Anonymous users never reach a view (LoginRequiredMiddleware)."""
from __future__ import annotations

from functools import wraps

from django.core.exceptions import PermissionDenied

from .services import has_role


def role_required(*roles: str):
    """403 unless the logged-in user has one of ``roles``."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, *roles):
                raise PermissionDenied("Your role does not allow this.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
