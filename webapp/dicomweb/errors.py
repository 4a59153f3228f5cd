"""Errors answered the way PS3.18 says, as JSON a person can read."""
from __future__ import annotations

from django.http import JsonResponse


class DicomWebError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JsonResponse:
        return JsonResponse({"error": self.message, "status": self.status}, status=self.status)


def bad_request(message: str) -> DicomWebError:
    return DicomWebError(400, message)


def not_acceptable(message: str) -> DicomWebError:
    return DicomWebError(406, message)


# --- project-wide handlers: JSON under /dicomweb/, Django's pages elsewhere -------------------------

DICOMWEB_PREFIX = "/dicomweb/"


def _is_dicomweb(request) -> bool:
    return request.path.startswith(DICOMWEB_PREFIX)


def _json_error(message: str, status: int) -> JsonResponse:
    response = JsonResponse({"error": message, "status": status}, status=status)
    response["Cache-Control"] = "private, no-store"
    return response


def as_json_error(response):
    """A plain error response (Django's 405 from @require_GET, for one) as the same JSON as ours."""
    if response.status_code < 400 or "json" in response.get("Content-Type", ""):
        return response
    message = {405: f"method not allowed here; allowed: {response.get('Allow', '')}"}.get(
        response.status_code, response.reason_phrase.lower())
    converted = _json_error(message, response.status_code)
    for header in ("Allow", "WWW-Authenticate", "Retry-After"):
        if response.has_header(header):
            converted[header] = response[header]
    return converted


def server_error(request):
    """handler500: a DICOMweb client gets JSON (no trace, no detail); a browser gets the error page."""
    if _is_dicomweb(request):
        return _json_error("internal server error; the incident was logged", 500)
    from django.views.defaults import server_error as html_server_error

    return html_server_error(request)


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: JSON 403 under /dicomweb/, Django's usual page elsewhere."""
    if _is_dicomweb(request):
        return _json_error(f"CSRF verification failed: {reason or 'missing or wrong CSRF token'}. "
                           "A browser session must send the X-CSRFToken header; scripts use a bearer token.", 403)
    from django.views.csrf import csrf_failure as html_csrf_failure

    return html_csrf_failure(request, reason=reason)
