"""The audit log page (admins) and a health check for process supervisors."""
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .decorators import role_required
from .models import AuditEvent, Role


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
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "accounts/audit_log.html", {"page": page, "query": query.urlencode(),
                                                        "action": action, "user_filter": user, "object": obj})


@require_GET
@login_not_required
def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
