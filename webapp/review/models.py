"""Findings on a series, the review state of a case, and the append-only revision history.

A finding is AI-proposed or radiologist-added; radiologists accept, reject, edit, paint and relabel
them. Every change is one :class:`ReviewRevision` row (who, when, before, after), numbered per case;
:class:`CaseReview` carries the case's current revision for optimistic concurrency.
"""
from __future__ import annotations

import numpy as np
from django.conf import settings
from django.db import models

from webapp.archive.models import Series, Study


class Finding(models.Model):
    class Source(models.TextChoices):
        AI = "ai", "AI"
        RADIOLOGIST = "radiologist", "Radiologist"

    class Status(models.TextChoices):
        PROPOSED = "proposed", "Proposed"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        EDITED = "edited", "Edited"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="findings")
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="findings")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.AI)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROPOSED, db_index=True)
    inference_run = models.ForeignKey("modelops.InferenceRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="findings")
    model_version = models.ForeignKey("modelops.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=32, default="nodule")
    # Patient coordinates (LPS) in millimetres; sizes in mm, volume in mL, density in HU.
    centre_x_mm = models.FloatField()
    centre_y_mm = models.FloatField()
    centre_z_mm = models.FloatField()
    bbox_min_xyz_mm = models.JSONField()
    bbox_max_xyz_mm = models.JSONField()
    diameter_mm = models.FloatField()
    long_axis_mm = models.FloatField(null=True, blank=True)
    short_axis_mm = models.FloatField(null=True, blank=True)
    volume_ml = models.FloatField(null=True, blank=True)
    mean_hu = models.FloatField(null=True, blank=True)
    score = models.FloatField(null=True, blank=True)
    uncertainty = models.FloatField(null=True, blank=True)
    # False for an AI finding scored below its model's operating point (a candidate: listed on request,
    # not counted as a positive finding); True for every other finding.
    flagged = models.BooleanField(default=True)
    # The mask: a bool (z, y, x) box, bit-packed. ``mask_origin_zyx`` is the box's first voxel on the
    # series grid AS IT WAS when the mask was stored; the grid moves when a slice arrives later (a new
    # lowest slice shifts every z index), so the box is anchored in patient space too: the LPS mm of
    # the centre of that first voxel and the grid's spacing then. Read masks with ``mask_on_grid``.
    mask_bits = models.BinaryField(null=True, blank=True)
    mask_shape_zyx = models.JSONField(null=True, blank=True)
    mask_origin_zyx = models.JSONField(null=True, blank=True)
    mask_origin_xyz_mm = models.JSONField(null=True, blank=True)
    mask_spacing_zyx_mm = models.JSONField(null=True, blank=True)
    reject_reason = models.CharField(max_length=500, blank=True)
    comment = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # the radiologist who added it (None for AI findings)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-diameter_mm", "pk"]
        indexes = [models.Index(fields=["series", "source"])]

    def audit_ref(self) -> tuple[str, str]:
        return "finding", str(self.pk)

    @property
    def centre_xyz_mm(self) -> tuple[float, float, float]:
        return (self.centre_x_mm, self.centre_y_mm, self.centre_z_mm)

    def set_mask(self, mask: np.ndarray, origin_zyx, grid=None) -> None:
        """Store ``mask`` (bool (z, y, x)) at voxel ``origin_zyx`` of ``grid``: anything with
        ``origin_xyz_mm``, ``spacing_zyx_mm`` and ``direction`` (a review ``SeriesGrid`` or an
        ``ml.volumes.Volume``). Without a grid the mask is not anchored in patient space."""
        mask = np.asarray(mask, dtype=bool)
        self.mask_bits = np.packbits(mask.ravel()).tobytes()
        self.mask_shape_zyx = [int(n) for n in mask.shape]
        self.mask_origin_zyx = [int(n) for n in origin_zyx]
        if grid is None:
            self.mask_origin_xyz_mm = self.mask_spacing_zyx_mm = None
        else:
            self.mask_origin_xyz_mm = [float(v) for v in _voxel_to_patient(grid, self.mask_origin_zyx)]
            self.mask_spacing_zyx_mm = [float(v) for v in grid.spacing_zyx_mm]

    def clear_mask(self) -> None:
        self.mask_bits = self.mask_shape_zyx = self.mask_origin_zyx = None
        self.mask_origin_xyz_mm = self.mask_spacing_zyx_mm = None

    def mask_on_grid(self, grid) -> tuple[np.ndarray | None, list[int] | None]:
        """The mask and its first voxel on ``grid`` (the series' grid now), placed by its patient-space
        anchor: the same anatomy whatever slices arrived since. When the slice spacing changed, the mask
        is resampled (nearest voxel centre). (None, None) without a mask or when none of it lies on
        the grid any more. Masks stored without an anchor keep their voxel origin."""
        mask = self.get_mask()
        if mask is None:
            return None, None
        if grid is None or self.mask_origin_xyz_mm is None:
            return mask, [int(v) for v in self.mask_origin_zyx]
        spacing_then = np.asarray(self.mask_spacing_zyx_mm, dtype=float)
        spacing_now = np.asarray(grid.spacing_zyx_mm, dtype=float)
        start = _patient_to_voxel(grid, self.mask_origin_xyz_mm)  # float (z, y, x) on the grid now
        if np.allclose(spacing_then, spacing_now, rtol=1e-3, atol=1e-4):
            origin = np.rint(start).astype(int)
        else:
            ratio = spacing_then / spacing_now  # grid-now voxels per stored voxel, per axis
            # grid-now voxels whose centres lie inside the stored box or on its edges (at least half of
            # the voxel inside: symmetric, so the mask's centre stays where it was), each taking the
            # stored voxel its centre falls in
            lo = np.ceil(start - 0.5 * ratio - 1e-6).astype(int)
            hi = np.floor(start + (np.asarray(mask.shape) - 0.5) * ratio + 1e-6).astype(int) + 1
            picks = [np.clip(np.floor((np.arange(lo[a], hi[a]) - start[a]) / ratio[a] + 0.5).astype(int), 0, mask.shape[a] - 1)
                     for a in range(3)]
            mask = mask[np.ix_(*picks)]
            origin = lo
        # Keep the part that lies on the grid now.
        shape_now = np.asarray(grid.shape_zyx)
        cut_lo = np.clip(-origin, 0, None)
        cut_hi = np.clip(origin + np.asarray(mask.shape) - shape_now, 0, None)
        mask = mask[tuple(slice(int(a), int(n - b)) for a, b, n in zip(cut_lo, cut_hi, mask.shape))]
        if mask.size == 0 or not mask.any():
            return None, None
        return mask, [int(v) for v in origin + cut_lo]

    def get_mask(self) -> np.ndarray | None:
        if self.mask_bits is None:
            return None
        shape = tuple(self.mask_shape_zyx)
        bits = np.unpackbits(np.frombuffer(bytes(self.mask_bits), dtype=np.uint8), count=int(np.prod(shape)))
        return bits.reshape(shape).astype(bool)


def _voxel_to_patient(grid, zyx) -> np.ndarray:
    """Voxel (z, y, x) -> LPS mm (x, y, z) on any grid with origin, spacing and direction."""
    ijk_mm = np.asarray(zyx, dtype=float)[::-1] * np.asarray(grid.spacing_zyx_mm, dtype=float)[::-1]
    return np.asarray(grid.origin_xyz_mm, dtype=float) + np.asarray(grid.direction, dtype=float) @ ijk_mm


def _patient_to_voxel(grid, xyz_mm) -> np.ndarray:
    """LPS mm (x, y, z) -> voxel (z, y, x), fractional."""
    offset = np.asarray(xyz_mm, dtype=float) - np.asarray(grid.origin_xyz_mm, dtype=float)
    ijk_mm = np.linalg.solve(np.asarray(grid.direction, dtype=float), offset)
    return (ijk_mm / np.asarray(grid.spacing_zyx_mm, dtype=float)[::-1])[::-1]


class CaseReview(models.Model):
    """The review state of one study. ``revision`` counts the changes; it is what clients send back
    as ``base_revision``. ``Study.review_status`` mirrors ``status`` for the case browser."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="case_review")
    revision = models.PositiveIntegerField(default=0)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_cases"
    )
    signed_off_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    signed_off_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    # Shown to the reader on the case and in the worklist until the case is signed off again: why it
    # was reopened without them (a late instance released from quarantine, an admin's reopen).
    notice = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"case {self.study_id} r{self.revision}"

    def audit_ref(self) -> tuple[str, str]:
        return "study", self.study.study_uid


class ReviewRevisionQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: ARG002
        raise PermissionError("review revisions are append-only")

    def delete(self):
        raise PermissionError("review revisions are append-only")


class ReviewRevision(models.Model):
    """One change to a case: revision number (1, 2, ... per case), who, when, the action, and the
    finding (or case) JSON before and after. ``model_version``: the model that proposed the finding
    (None for radiologist-added findings and case-level actions). Never updated or deleted."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="review_revisions")
    revision = models.PositiveIntegerField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True)  # kept if the user is deleted
    created_at = models.DateTimeField(auto_now_add=True)
    action = models.CharField(max_length=32)
    finding = models.ForeignKey(Finding, null=True, blank=True, on_delete=models.SET_NULL, related_name="revisions")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    model_version = models.ForeignKey(
        "modelops.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    objects = ReviewRevisionQuerySet.as_manager()

    class Meta:
        ordering = ["study", "-revision"]
        constraints = [models.UniqueConstraint(fields=["study", "revision"], name="one_revision_number_per_case")]

    def __str__(self) -> str:
        return f"case {self.study_id} r{self.revision} {self.action} by {self.username}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("review revisions are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("review revisions are append-only")
