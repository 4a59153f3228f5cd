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
    # The mask: a bool (z, y, x) box of the series' voxel grid starting at mask_origin_zyx, bit-packed.
    mask_bits = models.BinaryField(null=True, blank=True)
    mask_shape_zyx = models.JSONField(null=True, blank=True)
    mask_origin_zyx = models.JSONField(null=True, blank=True)
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

    def set_mask(self, mask: np.ndarray, origin_zyx) -> None:
        mask = np.asarray(mask, dtype=bool)
        self.mask_bits = np.packbits(mask.ravel()).tobytes()
        self.mask_shape_zyx = [int(n) for n in mask.shape]
        self.mask_origin_zyx = [int(n) for n in origin_zyx]

    def get_mask(self) -> np.ndarray | None:
        if self.mask_bits is None:
            return None
        shape = tuple(self.mask_shape_zyx)
        bits = np.unpackbits(np.frombuffer(bytes(self.mask_bits), dtype=np.uint8), count=int(np.prod(shape)))
        return bits.reshape(shape).astype(bool)


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
