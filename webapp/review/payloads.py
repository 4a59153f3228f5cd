"""JSON in and out of the review API (see the contract in the module docstring of ``api``).

Out: ``case_json``, ``finding_json``, ``revision_json``. In: small checked readers that raise
:class:`BadInput` with a message a person can act on.
"""
from __future__ import annotations

import math

from .geometry import encode_mask, series_grid
from .models import CaseReview, Finding, ReviewRevision

LABELS = ("nodule", "solid", "part_solid", "ground_glass", "calcified", "not_nodule")
MAX_TEXT = 5000
MAX_DIAMETER_MM = 300.0


class ReviewError(Exception):
    status = 400

    def __init__(self, message: str, **extra):
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadInput(ReviewError):
    status = 400


class Forbidden(ReviewError):
    status = 403


class NotFound(ReviewError):
    status = 404


class Conflict(ReviewError):
    status = 409


# --- out -----------------------------------------------------------------------------------------


def case_json(case: CaseReview) -> dict:
    return {
        "study_uid": case.study.study_uid,
        "revision": case.revision,
        "review_status": case.study.review_status,
        "assignee": case.assignee.get_username() if case.assignee else None,
        "signed_off_by": case.signed_off_by.get_username() if case.signed_off_by else None,
        "signed_off_at": case.signed_off_at.isoformat() if case.signed_off_at else None,
        "comment": case.comment,
        "notice": case.notice,
    }


def model_version_name(version) -> str | None:
    return f"{version.name}-v{version.version}" if version is not None else None


_NO_GRID = object()


def finding_json(f: Finding, grid=_NO_GRID) -> dict:
    """``grid``: the series' grid now (``series_grid``), if the caller has it; the mask is placed on
    it by its patient-space anchor, so its ``origin_zyx`` follows slices added since it was stored."""
    mask = None
    if f.mask_bits is not None:
        if f.mask_origin_xyz_mm is not None and grid is _NO_GRID:
            grid = series_grid(f.series)
        grid = None if grid is _NO_GRID else grid
        bits, origin = f.mask_on_grid(grid)
        if bits is not None:
            anchored = grid is not None and f.mask_origin_xyz_mm is not None
            mask = {"origin_zyx": origin, "shape_zyx": [int(n) for n in bits.shape], "bits_b64": encode_mask(bits),
                    # the box's anchor in patient space (LPS mm of its first voxel's centre; the grid's spacing)
                    "origin_xyz_mm": [float(v) for v in grid.voxel_to_patient(origin)] if anchored else f.mask_origin_xyz_mm,
                    "spacing_zyx_mm": [float(v) for v in grid.spacing_zyx_mm] if anchored else f.mask_spacing_zyx_mm}
    return {
        "id": f.pk,
        "series_uid": f.series.series_uid,
        "source": f.source,
        "status": f.status,
        "label": f.label,
        "centre_mm": [f.centre_x_mm, f.centre_y_mm, f.centre_z_mm],
        "bbox_min_mm": list(f.bbox_min_xyz_mm),
        "bbox_max_mm": list(f.bbox_max_xyz_mm),
        "diameter_mm": f.diameter_mm,
        "long_axis_mm": f.long_axis_mm,
        "short_axis_mm": f.short_axis_mm,
        "volume_ml": f.volume_ml,
        "mean_hu": f.mean_hu,
        "score": f.score,
        "flagged": f.flagged,
        "uncertainty": f.uncertainty,
        "model_version": model_version_name(f.model_version),
        "reject_reason": f.reject_reason,
        "comment": f.comment,
        "mask": mask,
    }


def revision_json(r: ReviewRevision) -> dict:
    return {"revision": r.revision, "action": r.action, "finding_id": r.finding_id, "user": r.username,
            "at": r.created_at.isoformat()}


# --- in ------------------------------------------------------------------------------------------


def read_int(body: dict, key: str, *, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"'{key}' must be an integer")
    return value


def read_point(body: dict, key: str, *, required: bool = True) -> list[float] | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
        raise BadInput(f"'{key}' must be a list of three finite numbers (x, y, z in mm)")
    return [float(v) for v in value]


def read_diameter(body: dict, key: str = "diameter_mm", *, required: bool = True) -> float | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0 < value <= MAX_DIAMETER_MM:
        raise BadInput(f"'{key}' must be a number of millimetres above 0 and at most {MAX_DIAMETER_MM:g}")
    return float(value)


def read_text(body: dict, key: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"'{key}' must be a string")
    if len(value) > limit:
        raise BadInput(f"'{key}' is longer than {limit} characters")
    return value.strip()


def read_label(body: dict, *, required: bool = True) -> str | None:
    value = body.get("label")
    if value is None and not required:
        return None
    if value not in LABELS:
        raise BadInput(f"'label' must be one of {', '.join(LABELS)}")
    return value
