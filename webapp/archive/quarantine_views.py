"""The quarantine page (admins): instances held because their study was signed off, with release
and discard. The workflow itself is in :mod:`.quarantine`."""
from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.decorators import role_required
from webapp.accounts.models import Role
from webapp.accounts.services import audit

from . import quarantine
from .models import QuarantinedInstance


@require_GET
@role_required(Role.ADMIN)
def quarantine_list(request):
    held = quarantine.held()
    decided = (QuarantinedInstance.objects.exclude(state=QuarantinedInstance.State.HELD)
               .select_related("study", "received_from", "decided_by").order_by("-decided_at", "-pk")[:50])
    audit(request.user, "archive.quarantine.viewed", object_type="quarantine", request=request,
          details={"held": len(held)})
    return render(request, "archive/quarantine.html", {"held": held, "decided": decided})


@require_POST
@role_required(Role.ADMIN)
def quarantine_release(request, item_id: int):
    try:
        result = quarantine.release(item_id, actor=request.user, request=request)
    except quarantine.QuarantineError as exc:
        messages.error(request, f"Not released: {exc}.")
    else:
        reopened = " The case was reopened and its reader told." if result["reopened"] else ""
        messages.success(request, f"Released into the study ({result['outcome']}).{reopened}")
    return redirect("archive:quarantine")


@require_POST
@role_required(Role.ADMIN)
def quarantine_discard(request, item_id: int):
    try:
        quarantine.discard(item_id, actor=request.user, note=request.POST.get("note", "")[:500], request=request)
    except quarantine.QuarantineError as exc:
        messages.error(request, f"Not discarded: {exc}.")
    else:
        messages.success(request, "Discarded: the file was deleted; the record stays below.")
    return redirect("archive:quarantine")
