"""The one way views reach archive objects: each getter checks the user's role first.

No view calls ``Study.objects.get`` itself. Unknown UIDs are 404; a user without a reading
role gets 403 before any lookup, so UIDs cannot be probed.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import Http404

from webapp.accounts.services import can_read_studies, can_upload, is_admin

from .models import Series, Study, UploadBatch


def studies_for_user(user) -> QuerySet[Study]:
    if not can_read_studies(user):
        raise PermissionDenied("Your role does not allow reading studies.")
    first_thumb = (
        Series.objects.filter(study=OuterRef("pk")).exclude(thumbnail="").order_by("series_number", "pk")
    )
    return Study.objects.annotate(
        num_series=Count("series", distinct=True),
        num_instances=Count("series__instances", distinct=True),
        thumb_series_uid=Subquery(first_thumb.values("series_uid")[:1]),
    )


def get_study_for_user(user, study_uid: str) -> Study:
    try:
        return studies_for_user(user).get(study_uid=study_uid)
    except Study.DoesNotExist:
        raise Http404("No such study.") from None


def get_series_for_user(user, series_uid: str) -> Series:
    if not can_read_studies(user):
        raise PermissionDenied("Your role does not allow reading studies.")
    try:
        return Series.objects.select_related("study").get(series_uid=series_uid)
    except Series.DoesNotExist:
        raise Http404("No such series.") from None


def get_batch_for_user(user, batch_id: int) -> UploadBatch:
    """An upload batch belongs to its creator: another uploader gets 404 (as for a batch that does
    not exist, so batch ids cannot be probed). Admins may see every batch."""
    if not can_upload(user):
        raise PermissionDenied("Only admins upload studies.")
    batches = UploadBatch.objects.all() if is_admin(user) else UploadBatch.objects.filter(created_by=user)
    try:
        return batches.get(pk=batch_id)
    except UploadBatch.DoesNotExist:
        raise Http404("No such upload.") from None
