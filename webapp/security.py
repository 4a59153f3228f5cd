"""Content-Security-Policy for every page (Django 5.2 has no built-in CSP).

The policy is ``settings.CONTENT_SECURITY_POLICY``: a dict of directive -> list of sources. No page may
run inline script: templates hand data to scripts with ``json_script`` (a JSON block the browser never
executes) or ``data-`` attributes, and every script is a file under STATIC_URL. A view that needs more
(the viewer's image codecs are WebAssembly) says so with ``@csp_extend``; paths under a prefix in
``settings.CONTENT_SECURITY_POLICY_BY_PATH`` get their additions too (kept empty unless a page needs it).

Other security headers (nosniff, Referrer-Policy, X-Frame-Options) come from Django's SecurityMiddleware
and XFrameOptionsMiddleware; ``frame-ancestors 'none'`` here says the same thing to current browsers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"
REPORT_ONLY_HEADER = "Content-Security-Policy-Report-Only"
# Responses that a browser may render as a document (and so run script in); JSON, DICOM and images
# are never documents: nosniff keeps the browser from guessing otherwise.
DOCUMENT_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")


def merge(base: Mapping[str, Iterable[str]], *extras: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """``base`` with every source of ``extras`` added to its directive (order kept, no duplicates)."""
    out = {name: list(sources) for name, sources in base.items()}
    for extra in extras:
        for name, sources in extra.items():
            name = name.replace("_", "-")
            current = out.setdefault(name, [])
            current += [s for s in sources if s not in current]
    return out


def render(policy: Mapping[str, Iterable[str]]) -> str:
    """The header value: ``default-src 'self'; img-src 'self' data:``; a directive without sources
    (``upgrade-insecure-requests``) is written alone."""
    return "; ".join(" ".join([name, *sources]) for name, sources in policy.items())


def csp_extend(**directives: Iterable[str]) -> Callable:
    """Adds sources to this view's policy only: ``@csp_extend(script_src=["'wasm-unsafe-eval'"])``."""

    def decorate(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response.csp_extend = directives
            return response

        return wrapped

    return decorate


def policy_for(request: HttpRequest, response: HttpResponse) -> dict[str, list[str]]:
    by_path = [extra for prefix, extra in getattr(settings, "CONTENT_SECURITY_POLICY_BY_PATH", {}).items()
               if request.path.startswith(prefix)]
    return merge(settings.CONTENT_SECURITY_POLICY, *by_path, getattr(response, "csp_extend", {}))


class ContentSecurityPolicyMiddleware:
    """Sets the CSP header on every document response that does not carry one already."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        header = REPORT_ONLY_HEADER if getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", False) else HEADER
        content_type = response.get("Content-Type", "").split(";")[0].strip().lower()
        if header not in response and content_type in DOCUMENT_TYPES:
            response[header] = render(policy_for(request, response))
        return response
