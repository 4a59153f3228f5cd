"""The CT viewer page. The page itself is a shell: the viewer (frontend/) reads images over
DICOMweb and findings over the review JSON API, both of which check roles and audit on their own."""
from __future__ import annotations

from django.db.models import Count
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from webapp.accounts.decorators import role_required
from webapp.accounts.models import Role
from webapp.accounts.services import audit
from webapp.archive.access import get_study_for_user

from .manifest import viewer_bundle


@require_GET
@role_required(Role.ADMIN, Role.RADIOLOGIST)
def study_viewer(request, study_uid: str):
    study = get_study_for_user(request.user, study_uid)
    bundle = viewer_bundle()
    audit(request.user, "viewer.study.opened", obj=study, request=request)
    # The series to open first (CT with the most images), so the page fetches its metadata at once
    # instead of waiting for a series search; the series bar still comes from QIDO-RS.
    by_size = study.series.annotate(n=Count("instances")).order_by("-n", "series_number", "pk")
    first = by_size.filter(modality="CT").first() or by_size.first()
    config = {
        "studyUid": study.study_uid,
        "seriesUid": first.series_uid if first else None,
        "dicomwebRoot": reverse("dicomweb:studies").removesuffix("/studies"),
        "reviewApi": f"/api/review/studies/{study.study_uid}/",
        "studyUrl": reverse("archive:study_detail", args=[study.study_uid]),
        "user": request.user.get_username(),
    }
    return render(request, "viewer/viewer.html", {"study": study, "bundle": bundle, "viewer_config": config})
