"""Request-wide rules of the accounts app: session lifetime, the request the audit signals
attribute changes to, and no caching of pages by default."""
from __future__ import annotations

import time
from contextvars import ContextVar

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.cache import patch_cache_control

SESSION_STARTED_KEY = "radloop_started"  # time.time() of the login
SESSION_SEEN_KEY = "radloop_seen"  # time.time() of the last request, to a minute
SEEN_RESOLUTION_SECONDS = 60  # the session is written at most once a minute for its idle clock

_current_request: ContextVar = ContextVar("radloop_request", default=None)


def current_request():
    """The request this thread is serving, or None (a worker, a management command)."""
    return _current_request.get()


class SessionTimeoutMiddleware:
    """End a session idle for SESSION_IDLE_TIMEOUT_SECONDS, or older than SESSION_MAX_AGE_SECONDS
    since its login (even while in use). Placed after AuthenticationMiddleware.

    Any request with the session cookie counts as activity, including the viewer's background
    saves; SESSION_MAX_AGE_SECONDS bounds how long a forgotten open viewer stays logged in.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            reason = self._expired(request.session, time.time())
            if reason:
                from .services import audit

                audit(user, "accounts.session.expired", object_type="user", object_id=user.pk, request=request,
                      details={"reason": reason})
                request.session.flush()
                request.user = AnonymousUser()
        return self.get_response(request)

    @staticmethod
    def _expired(session, now: float) -> str:
        started = session.get(SESSION_STARTED_KEY)
        seen = session.get(SESSION_SEEN_KEY)
        if started is None:  # a session from before this rule: its clock starts now
            session[SESSION_STARTED_KEY] = started = now
        if seen is not None and now - seen > settings.SESSION_IDLE_TIMEOUT_SECONDS:
            return "idle"
        if now - started > settings.SESSION_MAX_AGE_SECONDS:
            return "max_age"
        if seen is None or now - seen >= SEEN_RESOLUTION_SECONDS:
            session[SESSION_SEEN_KEY] = now
        return ""


class CurrentRequestMiddleware:
    """Remember the request for the audit signals (a change made in /django-admin/ names its admin)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


class NoStoreMiddleware:
    """``Cache-Control: private, no-store`` on every response that does not set its own.

    Pages and JSON carry patient data; no browser or proxy cache keeps them. Static files are
    answered by WhiteNoise before this runs and keep their long caching; views that choose a
    policy (thumbnails, DICOMweb) keep theirs.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response
