"""The review JSON API the viewer uses: thin views over ``services``, under ``/api/review/``.
Session auth (CSRF header on POST); radiologists and admins read cases. Changing a read is clinical
work: radiologists only, signing off only by the assignee (see ``services`` for the whole rule).

Every answer is JSON: anonymous 401, other roles 403 (also an admin who is not a radiologist changing
a finding, or a radiologist signing off someone else's case), unknown case or finding 404, bad input
400, stale ``base_revision`` or a signed-off case 409. Every read and every change is audited.
"""
from __future__ import annotations

import json
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from webapp.accounts.services import audit, can_read_studies
from webapp.archive.models import Study

from . import services
from .geometry import series_grid
from .models import Finding, ReviewRevision
from .payloads import (BadInput, NotFound, ReviewError, case_json, finding_json, read_diameter, read_int, read_label,
                       read_point, read_text, revision_json)
from .worklist import next_case, viewer_url

MAX_BODY_BYTES = 32 * 1024 * 1024  # a painted mask of a large box, base64


def review_api(method: str):
    def decorator(view):
        @login_not_required
        @csrf_exempt
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return JsonResponse({"error": "Log in to use the review API."}, status=401)
            if not can_read_studies(request.user):
                return JsonResponse({"error": "Your role does not allow reviewing cases."}, status=403)
            if request.method != method:
                return JsonResponse({"error": f"Use {method} here."}, status=405, headers={"Allow": method})
            if method == "POST":
                rejected = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})
                if rejected is not None:
                    return JsonResponse({"error": "CSRF check failed: send the X-CSRFToken header from the csrftoken cookie."}, status=403)
            try:
                return view(request, *args, **kwargs)
            except ReviewError as exc:
                return JsonResponse({"error": exc.message, **exc.extra}, status=exc.status)

        return wrapped

    return decorator


def _study(uid: str) -> Study:
    study = Study.objects.filter(study_uid=uid).first()
    if study is None:
        raise NotFound("No such study.")
    return study


@review_api("GET")
def case_detail(request, study_uid: str):
    study = _study(study_uid)
    case = services.get_case(study)
    series, grids = [], {}
    for s in study.series.order_by("series_number", "pk").annotate(num_instances=Count("instances")):
        grid = grids[s.pk] = series_grid(s)
        series.append({"series_uid": s.series_uid, "modality": s.modality, "description": s.description,
                       "num_instances": s.num_instances, "geometry": grid.as_json() if grid else None,
                       "geometry_warnings": list(s.geometry_warnings or [])})
    findings = Finding.objects.filter(study=study).select_related("series", "model_version").order_by("series__series_number", "series_id", "-diameter_mm", "pk")
    revisions = ReviewRevision.objects.filter(study=study).order_by("-revision")[:50]
    audit(request.user, "review.case.viewed", obj=study, request=request, details={"revision": case.revision})
    return JsonResponse({"case": case_json(case), "series": series, "findings": [finding_json(f, grids.get(f.series_id)) for f in findings],
                         "revisions": [revision_json(r) for r in revisions]})


def _body(request) -> dict:
    if len(request.body) > MAX_BODY_BYTES:
        raise BadInput(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.")
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadInput("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadInput("The request body must be a JSON object.")
    return body


def _accept(study, user, body, request):
    return services.accept_finding(study, user, base_revision=body.get("base_revision"),
                                   finding_id=body.get("finding_id"), request=request)


def _reject(study, user, body, request):
    return services.reject_finding(study, user, base_revision=body.get("base_revision"), finding_id=body.get("finding_id"),
                                   reason=read_text(body, "reason", required=False, limit=500), request=request)


def _edit(study, user, body, request):
    return services.edit_finding(
        study, user, base_revision=body.get("base_revision"), finding_id=body.get("finding_id"),
        centre_mm=read_point(body, "centre_mm", required=False), diameter_mm=read_diameter(body, required=False),
        bbox_min_mm=read_point(body, "bbox_min_mm", required=False), bbox_max_mm=read_point(body, "bbox_max_mm", required=False),
        request=request,
    )


def _mask(study, user, body, request):
    if body.get("mask") is None:
        raise BadInput("'mask' is required: {origin_zyx, shape_zyx, bits_b64}")
    return services.paint_mask(study, user, base_revision=body.get("base_revision"), finding_id=body.get("finding_id"),
                               mask=body["mask"], request=request)


def _add(study, user, body, request):
    return services.add_finding(
        study, user, base_revision=body.get("base_revision"), series_uid=body.get("series_uid"),
        centre_mm=read_point(body, "centre_mm"), diameter_mm=read_diameter(body), label=read_label(body, required=False),
        mask=body.get("mask"), request=request,
    )


def _label(study, user, body, request):
    return services.relabel_finding(study, user, base_revision=body.get("base_revision"), finding_id=body.get("finding_id"),
                                    label=read_label(body), request=request)


def _comment(study, user, body, request):
    return services.comment(study, user, base_revision=body.get("base_revision"), text=read_text(body, "text"),
                            finding_id=read_int(body, "finding_id", required=False), request=request)


def _restore(study, user, body, request):
    return services.restore_finding(study, user, base_revision=body.get("base_revision"), finding_id=body.get("finding_id"),
                                    state=body.get("state"), request=request)


def _assign(study, user, body, request):
    if "username" not in body:
        raise BadInput("'username' is required (a user name, or null to unassign)")
    return services.assign_case(study, user, base_revision=body.get("base_revision"), username=body["username"], request=request)


def _signoff(study, user, body, request):
    return services.sign_off_case(study, user, base_revision=body.get("base_revision"), request=request)


def _reopen(study, user, body, request):
    return services.reopen_case(study, user, base_revision=body.get("base_revision"),
                                reason=read_text(body, "reason", required=False, limit=400), request=request)


ACTIONS = {
    "accept": _accept, "reject": _reject, "edit": _edit, "mask": _mask, "add": _add, "label": _label,
    "comment": _comment, "restore": _restore, "assign": _assign, "signoff": _signoff, "reopen": _reopen,
}


@review_api("POST")
def case_action(request, study_uid: str):
    body = _body(request)
    handler = ACTIONS.get(body.get("action")) if isinstance(body.get("action"), str) else None
    if handler is None:
        raise BadInput(f"'action' must be one of {', '.join(ACTIONS)}")
    study = _study(study_uid)
    result = handler(study, request.user, body, request)
    return JsonResponse({"revision": result.revision, "case": case_json(result.case),
                         "finding": finding_json(result.finding) if result.finding is not None else None})


@review_api("GET")
def next_case_view(request):
    study = next_case(request.user)
    if study is None:
        return JsonResponse({"error": "No unreviewed cases"}, status=404)
    return JsonResponse({"study_uid": study.study_uid, "url": viewer_url(study.study_uid)})
