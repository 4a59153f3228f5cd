"""The learning loop's rows: which reviewed cases (at which revision) fed which training run, and
the runs themselves (champion -> challenger, progress, metrics of both, the promotion decision)."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from webapp.archive.models import Study
from webapp.modelops.models import ModelVersion


class DataSnapshot(models.Model):
    """The data of one training run, frozen when the run starts."""

    created_at = models.DateTimeField(auto_now_add=True)
    heldout_share = models.FloatField()
    n_train_cases = models.PositiveIntegerField(default=0)
    n_heldout_cases = models.PositiveIntegerField(default=0)
    n_lesions = models.PositiveIntegerField(default=0)  # positives of the training cases
    n_hard_negatives = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"snapshot {self.pk}: {self.n_train_cases} train / {self.n_heldout_cases} held out"


class SnapshotCase(models.Model):
    """One signed-off study in a snapshot: its review revision, its side of the split, its labels."""

    class Split(models.TextChoices):
        TRAIN = "train", "Training"
        HELDOUT = "heldout", "Held out"

    snapshot = models.ForeignKey(DataSnapshot, on_delete=models.CASCADE, related_name="cases")
    study = models.ForeignKey(Study, null=True, on_delete=models.SET_NULL, related_name="+")
    study_uid = models.CharField(max_length=64, db_index=True)  # kept if the study is deleted
    revision = models.PositiveIntegerField()  # CaseReview.revision the labels were read at
    split = models.CharField(max_length=8, choices=Split.choices)
    lesions = models.PositiveIntegerField(default=0)
    hard_negatives = models.PositiveIntegerField(default=0)
    note = models.CharField(max_length=300, blank=True)  # e.g. why a series was left out

    class Meta:
        ordering = ["snapshot", "study_uid"]
        constraints = [models.UniqueConstraint(fields=["snapshot", "study_uid"], name="one_row_per_study_in_snapshot")]


ACTIVE_STATES = ("queued", "running")


class TrainingRun(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        SIGNOFFS = "signoffs", "New sign-offs"
        MANUAL = "manual", "Admin"

    class Decision(models.TextChoices):
        NONE = "", "—"
        PROMOTED = "promoted", "Promoted"
        REJECTED = "rejected", "Rejected"
        AWAITING = "awaiting", "Awaiting approval"  # won, and PROMOTION_REQUIRES_APPROVAL: an admin decides

    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    # One run per schedule day / per sign-off threshold crossing (NULL for admin requests).
    trigger_key = models.CharField(max_length=100, null=True, blank=True, unique=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    signoffs_seen = models.PositiveIntegerField(default=0)  # sign-offs ever made, when requested
    parent = models.ForeignKey(ModelVersion, null=True, on_delete=models.PROTECT, related_name="training_runs")
    challenger = models.OneToOneField(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="made_by_run")
    snapshot = models.OneToOneField(DataSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_run")
    params = models.JSONField(default=dict, blank=True)  # hyper-parameters the run used
    # Progress, as the fine-tuning reports it.
    stage = models.CharField(max_length=50, blank=True)
    step = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    progress = models.FloatField(default=0.0)  # 0..1 over the whole run
    timings = models.JSONField(default=dict, blank=True)  # seconds per stage
    champion_metrics = models.JSONField(default=dict, blank=True)  # {"heldout": {...} | None, "phantom": {...}}
    challenger_metrics = models.JSONField(default=dict, blank=True)
    decision = models.CharField(max_length=16, choices=Decision.choices, default=Decision.NONE, blank=True)
    decision_reason = models.TextField(blank=True)
    # The admin who approved or rejected a challenger awaiting approval, when, and why (a rejection's note).
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    error = models.TextField(blank=True)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at", "-pk"]
        constraints = [
            # At most one run queued or running: a second request fails on this index, whatever races.
            models.UniqueConstraint(models.Value(1), condition=Q(state__in=ACTIVE_STATES), name="one_active_training_run"),
        ]

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.state})"

    def audit_ref(self) -> tuple[str, str]:
        return "training_run", str(self.pk)

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES
