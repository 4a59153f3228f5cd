"""The pipeline's periodic upkeep, installed after every ``migrate`` as a django-celery-beat
PeriodicTask (admins can change its interval or disable it in /django-admin/)."""
from __future__ import annotations

UPKEEP_NAME = "Pipeline upkeep"
UPKEEP_TASK = "workers.pipeline_upkeep"


def install_upkeep(sender=None, using="default", **kwargs) -> None:
    """Idempotent; an admin's edit of the schedule is kept."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if PeriodicTask.objects.using(using).filter(name=UPKEEP_NAME).exists():
        return
    every_minute, _ = IntervalSchedule.objects.using(using).get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.using(using).create(
        name=UPKEEP_NAME, task=UPKEEP_TASK, interval=every_minute, queue="cpu",
        description="Finish upload batches abandoned for UPLOAD_ABANDONED_SECONDS (their series are then read "
        "by the AI) and re-queue inference runs whose worker died (no heartbeat for INFERENCE_STALE_SECONDS).",
    )
