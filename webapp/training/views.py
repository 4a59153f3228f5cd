"""The model registry page (/models/): versions with metrics and data, plots, training runs with
live progress; admins retrain, promote, roll back and re-run unreviewed studies from it."""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.decorators import role_required
from webapp.accounts.models import Role
from webapp.modelops import services as modelops
from webapp.modelops.models import ModelVersion

from . import charts, services
from .models import TrainingRun

RUNS_SHOWN = 30


def _latest_metrics() -> dict[int, dict]:
    """Per model version id: the metrics of its latest measurement (as challenger or as champion)."""
    out: dict[int, dict] = {}
    for run in TrainingRun.objects.filter(state=TrainingRun.State.DONE).order_by("finished_at"):
        if run.parent_id and run.champion_metrics:
            out[run.parent_id] = run.champion_metrics
        if run.challenger_id and run.challenger_metrics:
            out[run.challenger_id] = run.challenger_metrics
    return out


def _number(metrics: dict | None, where: str, key: str):
    value = ((metrics or {}).get(where) or {}).get(key)
    return value if isinstance(value, (int, float)) else None


@require_GET
@role_required(Role.ADMIN)
def registry(request):
    champion = modelops.get_champion()
    versions = list(ModelVersion.objects.select_related("parent", "previous_champion")
                    .prefetch_related("made_by_run__snapshot").order_by("-version"))
    metrics = _latest_metrics()
    rows = []
    for v in versions:
        m = metrics.get(v.pk)
        run = getattr(v, "made_by_run", None)
        rows.append({"version": v, "run": run, "snapshot": run.snapshot if run else None,
                     "heldout_cpm": _number(m, "heldout", "cpm"), "phantom_cpm": _number(m, "phantom", "cpm"),
                     "dice": _number(m, "heldout", "dice_ge_6mm") if _number(m, "heldout", "dice_ge_6mm") is not None
                     else _number(m, "phantom", "dice_ge_6mm"),
                     "file_exists": v.path.exists()})
    chronological = list(reversed(rows))
    history = charts.history_svg(
        [r["version"].version for r in chronological],
        {"held-out CPM": [r["heldout_cpm"] for r in chronological],
         "phantom CPM": [r["phantom_cpm"] for r in chronological],
         "Dice >= 6 mm": [r["dice"] for r in chronological]},
        "Metrics across model versions")
    frocs = {}
    for where, title in (("phantom", "FROC on the phantom benchmark"), ("heldout", "FROC on held-out reviewed cases")):
        curves = []
        for r in chronological:
            froc = ((metrics.get(r["version"].pk) or {}).get(where) or {}).get("froc") or {}
            if froc.get("fp_per_scan") and froc.get("sensitivity"):
                curves.append((f"v{r['version'].version}", froc["fp_per_scan"], froc["sensitivity"]))
        if curves:
            frocs[where] = charts.froc_svg(curves[-8:], title)
    runs = list(TrainingRun.objects.select_related("parent", "challenger", "snapshot", "requested_by")[:RUNS_SHOWN])
    return render(request, "training/registry.html", {
        "champion": champion, "rows": rows, "history": history, "frocs": frocs, "runs": runs,
        "active": any(r.is_active for r in runs),
        "rollback_to": champion.previous_champion if champion else None,
        "requires_approval": settings.PROMOTION_REQUIRES_APPROVAL,
        "awaiting": sum(1 for r in rows if r["run"] and r["run"].decision == TrainingRun.Decision.AWAITING),
        "min_written_reason": modelops.MIN_WRITTEN_REASON,
    })


@require_GET
@role_required(Role.ADMIN)
def runs_json(request):
    """The latest training runs with their progress (for scripts and for the page's live refresh)."""
    runs = TrainingRun.objects.select_related("parent", "challenger")[:RUNS_SHOWN]
    return JsonResponse({"runs": [{
        "id": r.pk, "state": r.state, "trigger": r.trigger, "stage": r.stage, "step": r.step, "steps": r.steps,
        "loss": r.loss, "eta_seconds": r.eta_seconds, "progress": r.progress,
        "parent": r.parent.version if r.parent else None, "challenger": r.challenger.version if r.challenger else None,
        "decision": r.decision, "decision_reason": r.decision_reason, "error": r.error,
        "queued_at": r.queued_at.isoformat(), "finished_at": r.finished_at.isoformat() if r.finished_at else None,
    } for r in runs]})


@require_POST
@role_required(Role.ADMIN)
def retrain_now(request):
    try:
        run = services.request_retraining(TrainingRun.Trigger.MANUAL, actor=request.user, request=request)
    except services.TrainingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Training run {run.pk} queued: fine-tuning v{run.parent.version}.")
    return redirect("training:registry")


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@require_POST
@role_required(Role.ADMIN)
def promote(request, version: int):
    """Promote any version; a rejected one only with a written reason (the form's ``reason``)."""
    model = get_object_or_404(ModelVersion, version=version)
    try:
        services.promote_by_admin(model, actor=request.user, written_reason=request.POST.get("reason", ""),
                                  request=request)
    except services.TrainingError as exc:
        messages.error(request, _sentence(str(exc)))
    else:
        messages.success(request, f"v{model.version} is the champion; new studies are read with it.")
    return redirect("training:registry")


def _run_awaiting(run_id: int) -> TrainingRun:
    return get_object_or_404(TrainingRun, pk=run_id, decision=TrainingRun.Decision.AWAITING)


@require_POST
@role_required(Role.ADMIN)
def approve(request, run_id: int):
    """The challenger of a run awaiting approval becomes the champion."""
    run = _run_awaiting(run_id)
    try:
        model = services.approve_challenger(run.pk, actor=request.user, request=request)
    except services.TrainingError as exc:
        messages.error(request, _sentence(str(exc)))
    else:
        messages.success(request, f"Approved: v{model.version} is the champion; new studies are read with it.")
    return redirect("training:registry")


@require_POST
@role_required(Role.ADMIN)
def reject(request, run_id: int):
    """The challenger of a run awaiting approval is rejected (optional note, kept in the audit log)."""
    run = _run_awaiting(run_id)
    try:
        model = services.reject_challenger(run.pk, actor=request.user, note=request.POST.get("note", ""), request=request)
    except services.TrainingError as exc:
        messages.error(request, _sentence(str(exc)))
    else:
        messages.success(request, f"Rejected v{model.version}; v{run.parent.version} stays the champion.")
    return redirect("training:registry")


@require_POST
@role_required(Role.ADMIN)
def roll_back(request):
    try:
        model = modelops.roll_back(actor=request.user, request=request)
    except modelops.RegistryError as exc:
        messages.error(request, _sentence(str(exc)))
    else:
        messages.success(request, f"Rolled back: v{model.version} is the champion again.")
    return redirect("training:registry")


