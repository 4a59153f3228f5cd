"""Content-Security-Policy for every page (Django 5.2 has no built-in CSP).

The policy is ``settings.CONTENT_SECURITY_POLICY``: a dict of directive -> list of sources. No page runs
inline script or has inline style: templates hand data to scripts with ``json_script`` (a JSON block the
browser never executes) or ``data-`` attributes, every script and stylesheet is a file under STATIC_URL,
and scripts build DOM from text (frontend/src/dom.js). The viewer's image codecs are WebAssembly, but
they run in a web worker, which follows the policy of its own script file (a static file, sent without
a policy by whitenoise), so no page needs ``'wasm-unsafe-eval'``.

Other security headers (nosniff, Referrer-Policy, X-Frame-Options) come from Django's SecurityMiddleware
and XFrameOptionsMiddleware; ``frame-ancestors 'none'`` says the same as X-Frame-Options to current browsers.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"
REPORT_ONLY_HEADER = "Content-Security-Policy-Report-Only"
# Responses a browser may render as a document (and so run script in). JSON, DICOM and images are never
# documents: nosniff keeps the browser from guessing otherwise.
DOCUMENT_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")


def render(policy: Mapping[str, Iterable[str]]) -> str:
    """The header value, e.g. ``default-src 'self'; img-src 'self' data:``; a directive without sources
    (``upgrade-insecure-requests``) is written alone."""
    return "; ".join(" ".join([name, *sources]) for name, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    """Sets the CSP header on every document response that does not carry one already."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in DOCUMENT_TYPES and HEADER not in response and REPORT_ONLY_HEADER not in response:
            header = REPORT_ONLY_HEADER if settings.CONTENT_SECURITY_POLICY_REPORT_ONLY else HEADER
            response[header] = render(settings.CONTENT_SECURITY_POLICY)
        return response
