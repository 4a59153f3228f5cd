"""Admin job page: inference runs with their state, progress and errors; retry and re-run."""
from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.decorators import role_required
from webapp.accounts.models import Role
from webapp.accounts.services import audit_read_once, safe_next
from webapp.archive.access import get_study_for_user

from . import services
from .models import InferenceRun


@require_GET
@role_required(Role.ADMIN)
def job_list(request):
    runs = InferenceRun.objects.select_related("series__study", "model_version")
    state = request.GET.get("state", "")
    if state in InferenceRun.State.values:
        runs = runs.filter(state=state)
    page = Paginator(runs, 50).get_page(request.GET.get("page"))
    studies = sorted({run.series.study.study_uid for run in page})
    # The page names patients and reloads every 5 s: audited when what it shows changes, or every 10 min.
    audit_read_once(request, "modelops.jobs.viewed", object_type="job_list", object_id=f"page-{page.number}",
                    details={"studies": studies}, vary=" ".join(studies))
    counts = {s: InferenceRun.objects.filter(state=s).count() for s in InferenceRun.State.values}
    return render(request, "modelops/job_list.html", {
        "page": page, "state": state, "counts": counts, "states": InferenceRun.State.choices,
        "champion": services.get_champion(), "query": f"state={state}" if state else "",
    })


@require_POST
@role_required(Role.ADMIN)
def retry_run(request, run_id: int):
    run = get_object_or_404(InferenceRun.objects.select_related("series", "model_version"), pk=run_id)
    services.queue_inference(run.series, model=run.model_version, actor=request.user)
    messages.success(request, f"Run {run.pk} queued again.")
    return redirect(safe_next(request, "modelops:jobs"))


@require_POST
@role_required(Role.ADMIN)
def rerun_study(request, study_uid: str):
    study = get_study_for_user(request.user, study_uid)
    queued = [services.queue_inference(s, actor=request.user) for s in study.series.all()]
    messages.success(request, f"{sum(1 for r in queued if r and r.is_active)} series queued with the current champion.")
    return redirect(safe_next(request, "modelops:jobs"))


@require_POST
@role_required(Role.ADMIN)
def rerun_unreviewed(request):
    count = services.rerun_unreviewed(actor=request.user)
    messages.success(request, f"{count} series of unreviewed studies queued with the current champion.")
    return redirect(safe_next(request, "modelops:jobs"))


@require_POST
@role_required(Role.ADMIN)
def recover_stalled(request):
    recovered = services.recover_stalled_runs(actor=request.user)
    messages.success(request, f"{len(recovered)} stalled run(s) queued again.")
    return redirect("modelops:jobs")
