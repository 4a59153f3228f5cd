"""The database side of ML: model versions (the registry) and inference runs (the job rows)."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.archive.models import Series


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CHAMPION = "champion", "Champion"
        CHALLENGER = "challenger", "Challenger"
        REJECTED = "rejected", "Rejected"
        RETIRED = "retired", "Retired"

    version = models.PositiveIntegerField(unique=True)
    name = models.CharField(max_length=100)
    # Relative paths are relative to the project root (the shipped baseline lives in ml/weights/).
    file_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CHALLENGER, db_index=True)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    metadata = models.JSONField(default=dict, blank=True)  # from the model file: config, training data, metrics
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    # The champion this version replaced when it was last promoted: where "roll back" returns to.
    previous_champion = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="champion"), name="one_champion"),
        ]

    def __str__(self) -> str:
        return f"v{self.version} {self.name} ({self.status})"

    def audit_ref(self) -> tuple[str, str]:
        return "model_version", str(self.version)

    @property
    def path(self):
        from pathlib import Path

        p = Path(self.file_path)
        return p if p.is_absolute() else Path(settings.BASE_DIR) / p


class InferenceRun(models.Model):
    """One series read by one model version. The pair is unique: re-running replaces, never doubles."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        NO_MODEL = "no_model", "No model for this series"

    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="inference_runs")
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)  # 0..1
    stage = models.CharField(max_length=50, blank=True)
    device = models.CharField(max_length=50, blank=True)
    timings = models.JSONField(default=dict, blank=True)  # seconds per stage
    error = models.TextField(blank=True)  # shown to admins
    attempts = models.PositiveIntegerField(default=0)
    findings_count = models.PositiveIntegerField(default=0)
    case_uncertainty = models.FloatField(null=True, blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-queued_at"]
        constraints = [models.UniqueConstraint(fields=["series", "model_version"], name="one_run_per_series_and_model")]

    def __str__(self) -> str:
        return f"run {self.pk} series {self.series_id} v{self.model_version.version if self.model_version else '-'} {self.state}"

    def audit_ref(self) -> tuple[str, str]:
        return "inference_run", str(self.pk)

    @property
    def is_active(self) -> bool:
        return self.state in (self.State.QUEUED, self.State.RUNNING)
