"""Who may call DICOMweb: a browser session or a bearer token, checked on every request.

Anonymous -> 401 (with WWW-Authenticate), wrong role -> 403. Readers are admins and
radiologists; storing needs the admin or uploader role. Session POSTs keep CSRF protection.
"""
from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from webapp.accounts.services import can_read_studies, can_upload, user_for_token

from .errors import DicomWebError, as_json_error


def _unauthorized(message: str) -> JsonResponse:
    response = JsonResponse({"error": message, "status": 401}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="RadLoop DICOMweb"'
    return response


def dicomweb_view(*, store: bool = False):
    """Authenticate, check the role, and turn DicomWebError into its status code."""

    def decorator(view):
        @login_not_required
        @csrf_exempt
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = as_json_error(_checked(request, *args, **kwargs))
            # Patient data: never in a shared cache. Views that set their own (ETag'd, immutable
            # frames) keep theirs, which are private too.
            response.setdefault("Cache-Control", "private, no-cache")
            return response

        def _checked(request, *args, **kwargs):
            header = request.headers.get("Authorization", "")
            if header:
                scheme, _, key = header.partition(" ")
                user = user_for_token(key.strip()) if scheme.lower() == "bearer" else None
                if user is None:
                    return _unauthorized("invalid, expired or revoked token")
                request.user = user
                request.dicomweb_auth = "token"
            elif request.user.is_authenticated:
                request.dicomweb_auth = "session"
                if request.method not in ("GET", "HEAD", "OPTIONS"):
                    rejected = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})
                    if rejected is not None:
                        return rejected
            else:
                return _unauthorized("authentication required (session or Authorization: Bearer)")
            allowed = can_upload(request.user) if store else can_read_studies(request.user)
            if not allowed:
                what = "store studies" if store else "read studies"
                return JsonResponse({"error": f"your role does not allow you to {what}", "status": 403}, status=403)
            try:
                return view(request, *args, **kwargs)
            except DicomWebError as exc:
                return exc.response()

        return wrapped

    return decorator
