"""The periodic upkeep: abandoned uploads are finished (so their series get read), runs of dead
workers are queued again, and a long backlog of queued runs is left alone."""
from __future__ import annotations

import io
from datetime import timedelta

from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from tests.factories import series_bytes, uid
from webapp import jobs
from webapp.archive import services as archive
from webapp.archive.models import Series, UploadBatch, UploadItem
from webapp.modelops import services
from webapp.modelops.models import InferenceRun


def _upload(cast, n: int, *, series: str) -> UploadBatch:
    batch = archive.start_batch(cast.admin)
    for i, data in enumerate(series_bytes(n, series=series)):
        archive.ingest_stream(batch, f"{i}.dcm", io.BytesIO(data))
    return batch


def test_the_upkeep_is_on_the_beat_schedule_every_minute(db):
    task = PeriodicTask.objects.get(name="Pipeline upkeep")
    assert task.task == "workers.pipeline_upkeep" and task.enabled and task.queue == "cpu"
    assert (task.interval.every, task.interval.period) == (60, "seconds")


def test_an_abandoned_upload_is_finished_and_its_series_prepared(cast, settings, monkeypatch,
                                                                 django_capture_on_commit_callbacks):
    settings.UPLOAD_ABANDONED_SECONDS = 600
    sent = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: sent.append((name, a)))
    abandoned = _upload(cast, 2, series="series-abandoned")
    busy = _upload(cast, 2, series="series-busy")
    long_ago = timezone.now() - timedelta(seconds=601)
    UploadBatch.objects.filter(pk=abandoned.pk).update(created_at=long_ago)
    UploadItem.objects.filter(batch=abandoned).update(created_at=long_ago)
    UploadBatch.objects.filter(pk=busy.pk).update(created_at=long_ago)  # old batch, but files still arriving

    with django_capture_on_commit_callbacks(execute=True):
        result = services.pipeline_upkeep()

    assert result["finished_batches"] == [abandoned.pk]
    assert UploadBatch.objects.get(pk=abandoned.pk).state == "finished"
    assert UploadBatch.objects.get(pk=busy.pk).state == "open"
    abandoned_series = Series.objects.get(series_uid=uid("series-abandoned"))
    assert sent == [("workers.prepare_series", (abandoned_series.pk,))]
    # A second pass finds nothing more to do.
    with django_capture_on_commit_callbacks(execute=True):
        assert services.pipeline_upkeep()["finished_batches"] == []


def test_the_upkeep_requeues_dead_workers_runs_but_not_a_backlog(cast, monkeypatch, settings,
                                                                 django_capture_on_commit_callbacks):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: None)
    settings.INFERENCE_STALE_SECONDS = 300
    batch = _upload(cast, 2, series="series-a")
    _upload(cast, 2, series="series-b")
    with django_capture_on_commit_callbacks(execute=True):
        archive.finish_batch(batch)
    series_a, series_b = (Series.objects.get(series_uid=uid(name)) for name in ("series-a", "series-b"))
    dead = services.queue_inference(series_a)
    waiting = services.queue_inference(series_b)
    hour_ago = timezone.now() - timedelta(hours=1)
    InferenceRun.objects.filter(pk=dead.pk).update(state="running", heartbeat_at=hour_ago)
    InferenceRun.objects.filter(pk=waiting.pk).update(queued_at=hour_ago)  # behind a long queue
    jobs.broker_lost_messages_before()  # the broker holds its mark: it did not restart (tests/faults restarts one)

    with django_capture_on_commit_callbacks(execute=True):
        result = services.pipeline_upkeep()

    assert result["recovered_runs"] == [dead.pk]
    assert InferenceRun.objects.get(pk=dead.pk).state == "queued"
    assert InferenceRun.objects.get(pk=waiting.pk).queued_at == hour_ago
