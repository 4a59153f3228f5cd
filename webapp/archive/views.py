"""Case browser, study page, thumbnails and the upload page with its JSON API."""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, F, Q
from django.http import FileResponse, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import quote_etag
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.decorators import role_required
from webapp.accounts.models import Role
from webapp.accounts.services import audit, audit_read_once, can_read_studies
from webapp.modelops.models import InferenceRun
from webapp.modelops.services import ai_summary
from webapp.review.models import Finding
from webapp.review.ranking import current_ranking
from webapp.review.worklist import (filter_ai_result, filter_assignment, next_case, viewer_url, with_priority,
                                    with_review_columns)

from . import services
from .access import get_batch_for_user, get_series_for_user, get_study_for_user, studies_for_user
from .forms import DEFAULT_SORT, SORTABLE_COLUMNS, StudyFilterForm
from .models import Series
from .storage import archive_storage

PAGE_SIZE = 25


@require_GET
def study_list(request):
    ranking = current_ranking()
    studies = with_priority(with_review_columns(studies_for_user(request.user)), ranking)
    form = StudyFilterForm(request.GET or None)
    if form.is_valid():
        data = form.cleaned_data
        if data["q"]:
            q = data["q"].strip()
            studies = studies.filter(
                Q(patient_id__icontains=q) | Q(patient_name__icontains=q) | Q(accession_number__iexact=q)
            )
        if data["date_from"]:
            studies = studies.filter(study_date__gte=data["date_from"])
        if data["date_to"]:
            studies = studies.filter(study_date__lte=data["date_to"])
        if data["modality"]:
            studies = studies.filter(series__modality__iexact=data["modality"]).distinct()
        if data["review_status"]:
            studies = studies.filter(review_status=data["review_status"])
        if data["ai_status"]:
            studies = studies.filter(ai_status=data["ai_status"])
        studies = filter_assignment(studies, data["assigned"], request.user)
        studies = filter_ai_result(studies, data["ai_result"])
        sort = data["sort"] or DEFAULT_SORT
    else:
        sort = DEFAULT_SORT
    column = F(sort.lstrip("-"))
    studies = studies.order_by(column.desc(nulls_last=True) if sort.startswith("-") else column.asc(nulls_last=True),
                               "-study_date", "-created_at", "pk")
    page = Paginator(studies, PAGE_SIZE).get_page(request.GET.get("page"))
    modalities = _modalities_by_study([s.pk for s in page])
    ai = ai_summary([s.pk for s in page])
    for study in page:
        study.modalities = modalities.get(study.pk, [])
        study.ai = ai[study.pk]
        study.priority = ranking.get(study.pk)
    audit(request.user, "archive.study_list.viewed", object_type="study_list", request=request,
          details={"page": page.number, "filters": {k: v for k, v in request.GET.items() if k != "page" and v},
                   "studies": [s.study_uid for s in page]})
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "archive/study_list.html",
        {"form": form, "page": page, "query": query.urlencode(), "total": page.paginator.count,
         "sort_links": _sort_links(request, sort)},
    )


def _sort_links(request, current: str) -> dict[str, dict]:
    """Per sortable column: the URL that sorts by it (again: the other way) and the arrow to show."""
    links = {}
    for key in SORTABLE_COLUMNS:
        query = request.GET.copy()
        query.pop("page", None)
        query["sort"] = f"-{key}" if current == key else key
        arrow = "▲" if current == key else "▼" if current == f"-{key}" else ""
        links[key] = {"url": "?" + query.urlencode(), "arrow": arrow}
    return links


@require_GET
def next_case_page(request):
    """The worklist's "Next case" button: the viewer of the highest-priority case, or back to the list."""
    if not can_read_studies(request.user):
        raise PermissionDenied("Your role does not allow reading studies.")
    study = next_case(request.user)
    if study is None:
        messages.info(request, "No unreviewed cases: every case is signed off or assigned to someone else.")
        return redirect("archive:study_list")
    return redirect(viewer_url(study.study_uid))


def _modalities_by_study(study_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    rows = Series.objects.filter(study_id__in=study_ids).values_list("study_id", "modality").distinct()
    for study_id, modality in rows:
        out.setdefault(study_id, []).append(modality)
    return {k: sorted(v) for k, v in out.items()}


@require_GET
def study_detail(request, study_uid: str):
    study = get_study_for_user(request.user, study_uid)
    audit(request.user, "archive.study.viewed", obj=study, request=request)
    series = study.series.order_by("series_number", "pk").annotate(num_instances=Count("instances"))
    runs = {r.series_id: r for r in InferenceRun.objects.filter(series__study=study).select_related("model_version").order_by("queued_at")}
    for s in series:
        s.run = runs.get(s.pk)
    findings = Finding.objects.filter(study=study).select_related("model_version", "series")
    return render(request, "archive/study_detail.html", {"study": study, "series_list": series, "findings": findings})


@require_GET
def series_thumbnail(request, series_uid: str):
    series = get_series_for_user(request.user, series_uid)
    audit_read_once(request, "archive.thumbnail.viewed", object_type="study", object_id=series.study.study_uid,
                    details={"series": series.series_uid})
    try:
        if not series.thumbnail:
            series = services.prepare_series(series.pk)  # not prepared yet: render now, keep it
        if not series.thumbnail:
            return HttpResponse("this series has no images", status=404, content_type="text/plain")
        thumbnail = archive_storage().open(series.thumbnail, "rb")
    except Exception as exc:  # noqa: BLE001 - stored images are untrusted: a placeholder, never a 500
        import logging

        from .rendering import placeholder_png

        logging.getLogger(__name__).warning("thumbnail: series %s not renderable (%s)", series.pk, type(exc).__name__)
        response = HttpResponse(placeholder_png(), content_type="image/png")
        response["X-Thumbnail-Unavailable"] = "the images of this series cannot be rendered"
        response["Cache-Control"] = "private, no-cache"
        return response
    etag = quote_etag(f"{series.series_uid}-{series.prepared_at.timestamp() if series.prepared_at else 0}")
    if request.headers.get("If-None-Match") == etag:
        thumbnail.close()
        return HttpResponse(status=304, headers={"ETag": etag})
    response = FileResponse(thumbnail, content_type="image/png")
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- upload -------------------------------------------------------------------------------------


@require_GET
@role_required(Role.ADMIN, Role.UPLOADER)
def upload_page(request):
    return render(request, "archive/upload.html")


@require_POST
@role_required(Role.ADMIN, Role.UPLOADER)
def upload_batch_create(request):
    batch = services.start_batch(request.user, request=request)
    return JsonResponse({"batch": batch.pk}, status=201)


@require_POST
@role_required(Role.ADMIN, Role.UPLOADER)
def upload_batch_files(request, batch_id: int):
    batch = get_batch_for_user(request.user, batch_id)
    if batch.state != batch.State.OPEN:
        return JsonResponse({"error": "This upload is already finished; start a new one."}, status=409)
    files = request.FILES.getlist("files")
    if not files:
        return JsonResponse({"error": "No files in the request (form field 'files')."}, status=400)
    # Browsers send the relative path (folder uploads) beside each file; Django keeps basenames only.
    paths = request.POST.getlist("paths")
    names = [p.strip()[:1024] for p in paths] if len(paths) == len(files) else [""] * len(files)
    outcomes = services.ingest_uploads(
        batch, [(name or f.name, f) for name, f in zip(names, files)], actor=request.user, request=request
    )
    body = {"results": [o.as_dict() for o in outcomes]}
    kept = {services.Outcome.STORED, services.Outcome.DUPLICATE, services.Outcome.QUARANTINED}  # held: not refused
    if any(o.outcome == services.Outcome.REJECTED for o in outcomes) and not any(o.outcome in kept for o in outcomes):
        # Nothing of the request could be stored: a client error, with each file's reason in the body.
        body["error"] = "Every file of this request was refused; see each file's reason."
        return JsonResponse(body, status=422)
    return JsonResponse(body)


@require_POST
@role_required(Role.ADMIN, Role.UPLOADER)
def upload_batch_finish(request, batch_id: int):
    batch = get_batch_for_user(request.user, batch_id)
    summary = services.finish_batch(batch, actor=request.user, request=request)
    return JsonResponse(summary)


@require_GET
@role_required(Role.ADMIN, Role.UPLOADER)
def upload_batch_detail(request, batch_id: int):
    batch = get_batch_for_user(request.user, batch_id)
    items = batch.items.all()
    summary = services.batch_summary(batch)
    audit(request.user, "archive.upload.viewed", obj=batch, request=request,
          details={"studies": [st["study_uid"] for st in summary.get("studies", [])]})
    return render(
        request,
        "archive/upload_detail.html",
        {"batch": batch, "items": items, "summary": summary},
    )
