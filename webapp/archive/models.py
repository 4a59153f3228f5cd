"""The DICOM archive: Study / Series / Instance, and upload batches with per-file outcomes.

Geometry is kept in the units DICOM gives: millimetres, patient coordinates (LPS).
"""
from __future__ import annotations

from django.conf import settings
from django.db import models


class ReviewStatus(models.TextChoices):
    UNREVIEWED = "unreviewed", "Unreviewed"
    IN_REVIEW = "in_review", "In review"
    SIGNED_OFF = "signed_off", "Signed off"


class AIStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    PROCESSING = "processing", "Processing"
    AI_READY = "ai_ready", "AI ready"
    AI_FAILED = "ai_failed", "AI failed"
    NO_MODEL = "no_model", "No model"


class Study(models.Model):
    study_uid = models.CharField("Study Instance UID", max_length=64, unique=True)
    patient_id = models.CharField(max_length=64, blank=True, db_index=True)
    patient_name = models.CharField(max_length=324, blank=True, db_index=True)
    patient_sex = models.CharField(max_length=16, blank=True)
    patient_birth_date = models.DateField(null=True, blank=True)
    study_date = models.DateField(null=True, blank=True, db_index=True)
    study_time = models.TimeField(null=True, blank=True)
    study_id = models.CharField("Study ID", max_length=16, blank=True)
    description = models.CharField(max_length=64, blank=True)
    accession_number = models.CharField(max_length=16, blank=True, db_index=True)
    referring_physician = models.CharField(max_length=324, blank=True)
    institution = models.CharField(max_length=64, blank=True)
    review_status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.UNREVIEWED, db_index=True
    )
    ai_status = models.CharField(
        max_length=16, choices=AIStatus.choices, default=AIStatus.UPLOADED, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-study_date", "-created_at"]

    def __str__(self) -> str:
        return f"{self.patient_name or self.patient_id or '?'} {self.study_date or ''} {self.description}".strip()

    def audit_ref(self) -> tuple[str, str]:
        return "study", self.study_uid

    @property
    def patient_display_name(self) -> str:
        """DICOM PN 'Family^Given^Middle' shown as 'Family, Given Middle'."""
        parts = [p for p in self.patient_name.split("=")[0].split("^")]
        if len(parts) >= 2 and parts[1]:
            return f"{parts[0]}, {' '.join(p for p in parts[1:] if p)}"
        return parts[0] if parts else ""


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_uid = models.CharField("Series Instance UID", max_length=64, unique=True)
    modality = models.CharField(max_length=16, blank=True, db_index=True)
    series_number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=64, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    manufacturer = models.CharField(max_length=64, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    # PixelSpacing as DICOM gives it: (row spacing, column spacing) in mm.
    pixel_spacing_row_mm = models.FloatField(null=True, blank=True)
    pixel_spacing_col_mm = models.FloatField(null=True, blank=True)
    slice_thickness_mm = models.FloatField(null=True, blank=True)
    # Measured from ImagePositionPatient along the slice normal (set when the series is prepared).
    slice_spacing_mm = models.FloatField(null=True, blank=True)
    image_orientation = models.JSONField(null=True, blank=True)  # six direction cosines
    kvp = models.FloatField(null=True, blank=True)
    convolution_kernel = models.CharField(max_length=64, blank=True)
    # Set by prepare_series (ml.volumes.geometry_warnings): sentences a reader must see (mixed frames
    # of reference, bad PixelSpacing or orientation, NaN positions, gaps, duplicates, images left out).
    geometry_warnings = models.JSONField(default=list, blank=True)
    thumbnail = models.CharField(max_length=255, blank=True)  # path in the archive storage
    prepared_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "series"
        ordering = ["series_number", "created_at"]

    def __str__(self) -> str:
        return f"{self.modality} #{self.series_number} {self.description}".strip()

    def audit_ref(self) -> tuple[str, str]:
        return "series", self.series_uid


class Instance(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_uid = models.CharField("SOP Instance UID", max_length=64, unique=True)
    sop_class_uid = models.CharField(max_length=64)
    image_type = models.CharField(max_length=128, blank=True)  # ImageType, values joined by '\\'
    instance_number = models.IntegerField(null=True, blank=True)
    # ImagePositionPatient (x, y, z) in mm, LPS.
    position_x_mm = models.FloatField(null=True, blank=True)
    position_y_mm = models.FloatField(null=True, blank=True)
    position_z_mm = models.FloatField(null=True, blank=True)
    image_orientation = models.JSONField(null=True, blank=True)
    # This image's own PixelSpacing [row, column] mm and FrameOfReferenceUID (the series row keeps
    # the first image's): the grid rule compares them across the series.
    pixel_spacing_mm = models.JSONField(null=True, blank=True)
    frame_of_reference_uid = models.CharField(max_length=64, blank=True)
    slice_location_mm = models.FloatField(null=True, blank=True)
    rows = models.PositiveIntegerField()
    columns = models.PositiveIntegerField()
    bits_allocated = models.PositiveSmallIntegerField()
    samples_per_pixel = models.PositiveSmallIntegerField(default=1)
    number_of_frames = models.PositiveIntegerField(default=1)
    transfer_syntax_uid = models.CharField(max_length=64)
    # Where the PixelData value starts in the stored file, and its length (native syntaxes),
    # so frames can be served with one seek and no decode.
    pixel_data_offset = models.BigIntegerField(null=True, blank=True)
    pixel_data_length = models.BigIntegerField(null=True, blank=True)
    file_path = models.CharField(max_length=255)  # relative to the archive storage
    file_size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance_number", "id"]

    def __str__(self) -> str:
        return f"Instance {self.instance_number} of {self.series_id}"

    def audit_ref(self) -> tuple[str, str]:
        return "instance", self.sop_uid


class UploadBatch(models.Model):
    """One upload session (a drag-and-drop, an import command, a STOW-RS request)."""

    class Source(models.TextChoices):
        BROWSER = "browser", "Browser upload"
        COMMAND = "command", "import_dicom command"
        STOW = "stow", "STOW-RS"

    class State(models.TextChoices):
        OPEN = "open", "Uploading"
        FINISHED = "finished", "Finished"

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.BROWSER)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def audit_ref(self) -> tuple[str, str]:
        return "upload", str(self.pk)


class UploadItem(models.Model):
    """The outcome for one file of an upload batch, as shown to the uploader."""

    class Outcome(models.TextChoices):
        STORED = "stored", "Stored"
        DUPLICATE = "duplicate", "Duplicate (already stored)"
        REJECTED = "rejected", "Rejected"
        SKIPPED = "skipped", "Skipped"
        QUARANTINED = "quarantined", "Quarantined (study signed off)"

    batch = models.ForeignKey(UploadBatch, on_delete=models.CASCADE, related_name="items")
    name = models.CharField(max_length=1024)
    size = models.BigIntegerField(default=0)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    instance = models.ForeignKey(Instance, null=True, blank=True, on_delete=models.SET_NULL)
    series = models.ForeignKey(Series, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class QuarantinedInstance(models.Model):
    """A file that arrived for a signed-off study: kept outside the served archive (no Instance row)
    until an admin releases it into the study (which reopens the case) or discards it. See
    :mod:`webapp.archive.quarantine`."""

    class State(models.TextChoices):
        HELD = "held", "Held"
        RELEASED = "released", "Released into the study"
        DISCARDED = "discarded", "Discarded"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="quarantined")
    study_uid = models.CharField(max_length=64)
    series_uid = models.CharField(max_length=64)
    sop_uid = models.CharField(max_length=64, db_index=True)
    sha256 = models.CharField(max_length=64)
    file_path = models.CharField(max_length=255)  # relative to the quarantine folder
    file_name = models.CharField(max_length=1024)  # as the sender named it
    file_size = models.BigIntegerField(default=0)
    reason = models.CharField(max_length=500)
    source = models.CharField(max_length=16, blank=True)  # UploadBatch.Source: which door it came through
    batch = models.ForeignKey(UploadBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_from = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.HELD, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def audit_ref(self) -> tuple[str, str]:
        return "quarantine", str(self.pk)
