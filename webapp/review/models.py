"""Findings on a series: AI-proposed now; radiologists' corrections build on them (issue 6)."""
from __future__ import annotations

import numpy as np
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
    # The mask: a bool (z, y, x) box of the series' voxel grid starting at mask_origin_zyx, bit-packed.
    mask_bits = models.BinaryField(null=True, blank=True)
    mask_shape_zyx = models.JSONField(null=True, blank=True)
    mask_origin_zyx = models.JSONField(null=True, blank=True)
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
