"""The audit log and API token pages (admins) and a health check for process supervisors."""
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import services
from .decorators import role_required
from .models import ApiToken, AuditEvent, Role


@require_GET
@role_required(Role.ADMIN)
def audit_log(request):
    events = AuditEvent.objects.all()
    action = request.GET.get("action", "").strip()
    user = request.GET.get("user", "").strip()
    obj = request.GET.get("object", "").strip()
    if action:
        events = events.filter(action__startswith=action)
    if user:
        events = events.filter(actor_username=user)
    if obj:
        events = events.filter(object_id=obj)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    # The log names patients' studies: reading it is itself audited.
    services.audit(request.user, "accounts.audit_log.viewed", request=request,
                   details={"action": action, "user": user, "object": obj, "page": page.number})
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "accounts/audit_log.html", {"page": page, "query": query.urlencode(),
                                                        "action": action, "user_filter": user, "object": obj})


@require_GET
@role_required(Role.ADMIN)
def api_token_list(request):
    tokens = ApiToken.objects.select_related("user")
    page = Paginator(tokens, 50).get_page(request.GET.get("page"))
    return render(request, "accounts/token_list.html", {"page": page, "query": ""})


@require_POST
@role_required(Role.ADMIN)
def api_token_revoke(request, token_id: int):
    token = get_object_or_404(ApiToken.objects.select_related("user"), pk=token_id)
    if services.revoke_token(token, actor=request.user, request=request):
        messages.success(request, f"Token {token.name!r} of {token.user.get_username()} is revoked.")
    else:
        messages.info(request, f"Token {token.name!r} was already revoked.")
    return redirect("api_tokens")


@require_GET
@login_not_required
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
