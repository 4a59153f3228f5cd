"""Training data from reviews: signed-off cases as ``ml.finetune.LabelledCase`` objects, and the
fixed held-out split.

Labels are the case's current state, which for a signed-off case is its latest revision (a signed-off
case takes no change but "reopen", and a reopened case is not signed off, hence not used):

* positives: AI findings accepted or edited, and findings a radiologist added, with their masks
  (``Finding.mask_on_grid`` on the series grid = the volume's grid) or, where a
  mask was cleared by an edit, none (the lesion's ball);
* hard negatives: AI findings rejected, and any finding labelled ``not_nodule``;
* everything else on the scan is background.

Split: a study is held out when ``sha256(study UID)`` falls in the lowest ``RETRAIN_HELDOUT_SHARE``
of the hash range. A study keeps the side it was first recorded on in a snapshot, so the split
survives retraining and even a later change of the share: a held-out study is never trained on.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from webapp.archive import services as archive
from webapp.archive.models import ReviewStatus, Series, Study
from webapp.review.geometry import series_grid
from webapp.review.models import CaseReview, Finding

from .models import SnapshotCase

log = logging.getLogger(__name__)

TRAIN, HELDOUT = SnapshotCase.Split.TRAIN, SnapshotCase.Split.HELDOUT
POSITIVE_STATUSES = (Finding.Status.ACCEPTED, Finding.Status.EDITED)
NEGATIVE_LABELS = ("not_nodule",)
MODALITIES = ("CT",)


def hash_fraction(study_uid: str) -> float:
    """A stable number in [0, 1) for a study UID (the first 64 bits of its SHA-256)."""
    return int(hashlib.sha256(study_uid.encode()).hexdigest()[:16], 16) / 2**64


def split_of(study_uids, share: float | None = None) -> dict[str, str]:
    """``{study_uid: "train" | "heldout"}``: the side a study was recorded on before, else the hash's."""
    share = settings.RETRAIN_HELDOUT_SHARE if share is None else share
    uids = list(study_uids)
    recorded = dict(SnapshotCase.objects.filter(study_uid__in=uids).order_by("pk").values_list("study_uid", "split")
                    .distinct())
    # order_by pk + dict(): the latest row wins, but a study never changes side, so all rows agree.
    return {uid: recorded.get(uid) or (HELDOUT if hash_fraction(uid) < share else TRAIN) for uid in uids}


def signed_off_studies():
    """Studies whose review is signed off (the only ones ever used)."""
    return Study.objects.filter(review_status=ReviewStatus.SIGNED_OFF, case_review__signed_off_at__isnull=False)


# --- labels ---------------------------------------------------------------------------------------


@dataclass
class LesionLabel:
    centre_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    mask: object  # bool (z, y, x) box on the series grid, or None
    mask_origin_zyx: tuple[int, int, int] | None


@dataclass
class SeriesLabels:
    """The labels of one series of a signed-off case, read with the case's revision."""

    study_uid: str
    series_id: int
    series_uid: str
    revision: int
    lesions: list[LesionLabel] = field(default_factory=list)
    hard_negatives_xyz_mm: list[tuple[float, float, float]] = field(default_factory=list)


@dataclass
class CaseLabels:
    study_uid: str
    revision: int
    series: list[SeriesLabels]


def read_labels(study: Study) -> CaseLabels | None:
    """The labels of every CT series of a signed-off study, read under the case's row lock so the
    revision and the findings belong together. None when the study is not signed off (any more)."""
    with transaction.atomic():
        case = CaseReview.objects.select_for_update().filter(study=study).first()
        study.refresh_from_db(fields=["review_status"])
        if case is None or case.signed_off_at is None or study.review_status != ReviewStatus.SIGNED_OFF:
            return None
        series = {s.pk: SeriesLabels(study.study_uid, s.pk, s.series_uid, case.revision)
                  for s in study.series.filter(modality__in=MODALITIES)}
        for f in Finding.objects.filter(study=study, series_id__in=series.keys()).order_by("pk"):
            labels = series[f.series_id]
            if f.label in NEGATIVE_LABELS or (f.source == Finding.Source.AI and f.status == Finding.Status.REJECTED):
                labels.hard_negatives_xyz_mm.append(tuple(float(v) for v in f.centre_xyz_mm))
            elif f.status in POSITIVE_STATUSES:
                # the mask placed on the series grid now, by its patient-space anchor (slices may have
                # arrived since it was painted: a new lowest slice shifts every z index)
                mask, origin = f.mask_on_grid(series_grid(f.series) if f.mask_origin_xyz_mm is not None else None)
                labels.lesions.append(LesionLabel(
                    tuple(float(v) for v in f.centre_xyz_mm), float(f.diameter_mm), mask,
                    tuple(int(v) for v in origin) if mask is not None else None))
            # a rejected radiologist-added finding is a withdrawn mark, not evidence either way
    return CaseLabels(study.study_uid, case.revision, list(series.values()))


# --- volumes --------------------------------------------------------------------------------------


class UnreadableSeries(Exception):
    pass


def load_volume(series_id: int):
    """The series as an ``ml.volumes.Volume`` (HU, spacing, origin, direction)."""
    from ml.volumes import load_series

    storage = archive.archive_storage()
    paths = [storage.path(p) for p in Series.objects.get(pk=series_id).instances.values_list("file_path", flat=True)]
    try:
        volume, _ = load_series(paths)
    except Exception as exc:  # SeriesError, unreadable pixels, corrupt files
        raise UnreadableSeries(f"{type(exc).__name__}: {exc}") from None
    return volume


def _mask_fits(mask, origin, shape) -> bool:
    return all(0 <= o and o + n <= s for o, n, s in zip(origin, mask.shape, shape))


def labelled_case(labels: SeriesLabels, volume, *, case_id: str):
    """An ``ml.finetune.LabelledCase``. A mask that does not lie inside the volume (the series was
    changed under it) is dropped; the lesion then counts as the ball of its diameter."""
    from ml.finetune import LabelledCase, LabelledLesion

    lesions = []
    for les in labels.lesions:
        mask, origin = les.mask, les.mask_origin_zyx
        if mask is not None and not _mask_fits(mask, origin, volume.shape):
            log.warning("study %s: a mask outside the volume grid is replaced by the lesion's ball", labels.study_uid)
            mask, origin = None, None
        lesions.append(LabelledLesion(centre_xyz_mm=les.centre_xyz_mm, diameter_mm=les.diameter_mm,
                                      mask=mask, mask_origin_zyx=origin))
    return LabelledCase(case_id=case_id, volume=volume, lesions=lesions,
                        hard_negatives_xyz_mm=list(labels.hard_negatives_xyz_mm))
