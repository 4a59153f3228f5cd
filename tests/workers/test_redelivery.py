"""A series that kills the worker reading it (out of memory) is not redelivered forever: after
INFERENCE_MAX_ATTEMPTS attempts whose worker died, the run fails with a reason an admin can read;
and a flagged series ends its pre-read with the visible reason, once, without a retry."""
from __future__ import annotations

import io
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import ct_slice, series_bytes, to_bytes
from tests.phantoms import ingest_phantom, small_phantom_with_nodule
from tests.workers.conftest import wait_for
from webapp.archive import services as archive
from webapp.archive.models import Series, Study
from webapp.modelops import services
from webapp.modelops.models import InferenceRun
from webapp.review.models import Finding

KILLED = "the worker was killed while reading this series (out of memory?) 2 times"


def load_predictor(model):
    from ml.inference import Predictor

    return Predictor.from_checkpoint(model.path)


def never_load(model):
    raise AssertionError("the model must not be loaded for this run")


def small_series(cast) -> Series:
    batch = archive.start_batch(cast.admin)
    for data in series_bytes(4, rows=32, columns=32):
        archive.ingest_stream(batch, "x.dcm", io.BytesIO(data))
    return archive.prepare_series(Series.objects.get().pk)


@pytest.mark.django_db
def test_a_run_whose_worker_died_twice_fails_with_the_reason_instead_of_running_again(cast, settings):
    settings.INFERENCE_MAX_ATTEMPTS = 2
    series = small_series(cast)
    run = services.queue_inference(series)
    services.claim(run.pk)  # the first worker dies here: no ending is written
    services.claim(run.pk)  # acks_late redelivers; the second worker dies too

    result = services.run_inference(run.pk, never_load)

    run.refresh_from_db()
    assert run.state == "failed" and run.attempts == 2 and result.state == "skipped"
    assert run.error.startswith(KILLED)
    assert Study.objects.get().ai_status == "ai_failed"
    assert services.run_inference(run.pk, never_load).state == "skipped"  # a later delivery does nothing


@pytest.mark.django_db
def test_the_upkeep_keeps_counting_and_a_persons_retry_starts_again(cast, admin_client, settings):
    settings.INFERENCE_MAX_ATTEMPTS = 2
    series = small_series(cast)
    run = services.queue_inference(series)
    services.claim(run.pk)
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.recover_stalled_runs(stale_seconds=60) == [run.pk]  # the whole worker died: re-queued
    services.claim(run.pk)
    InferenceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    services.recover_stalled_runs(stale_seconds=60)

    services.run_inference(run.pk, never_load)
    run.refresh_from_db()
    assert run.state == "failed" and run.error.startswith(KILLED)
    page = admin_client.get(reverse("archive:study_detail", args=[series.study.study_uid])).content.decode()
    assert KILLED in page

    services.queue_inference(series, actor=cast.admin)  # an admin's retry
    run.refresh_from_db()
    assert (run.state, run.attempts) == ("queued", 0)
    assert services.claim(run.pk).attempts == 1


@pytest.mark.django_db
def test_the_pre_read_of_a_series_without_a_trustworthy_volume_ends_once_with_the_reason(cast, client):
    batch = archive.start_batch(cast.admin)
    for i in range(4):
        ds = ct_slice(index=i, rows=32, columns=32, ImageOrientationPatient=[1, 0, 0, 0.3, 1, 0])
        archive.ingest_stream(batch, "x.dcm", io.BytesIO(to_bytes(ds)))
    series = archive.prepare_series(Series.objects.get().pk)
    run = services.queue_inference(series)

    result = services.run_inference(run.pk, never_load)

    run.refresh_from_db()
    reason = "row and column vectors of ImageOrientationPatient are not perpendicular (73.3°)"
    assert result.state == "failed" and run.state == "failed" and run.attempts == 1
    assert run.error.startswith("this series cannot be read as a CT volume:") and reason in run.error
    assert services.run_inference(run.pk, never_load).state == "skipped"  # not retried
    study_page = reverse("archive:study_detail", args=[series.study.study_uid])
    client.force_login(cast.radiologist)
    reader_page = client.get(study_page).content.decode()
    assert f"No CT volume can be built: no usable image slices: the {reason}" in reader_page  # the geometry box
    client.force_login(cast.admin)
    assert reason in client.get(study_page).content.decode().split("geometry-warnings")[0]  # the run's error
    assert reason in client.get(reverse("modelops:jobs")).content.decode()


@pytest.mark.django_db
def test_a_flagged_but_usable_series_is_read_and_keeps_its_flag(cast, tmp_path, admin_client):
    import pydicom
    from pydicom.uid import generate_uid

    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", small_phantom_with_nodule())
    odd = pydicom.dcmread(sorted(Path(tmp_path / "dicom").rglob("*.dcm"))[0])
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    odd.Rows, odd.Columns = 32, 32
    odd.PixelData = bytes(32 * 32 * 2)
    assert archive.ingest_stream(batch, "odd.dcm", io.BytesIO(to_bytes(odd))).outcome == "stored"
    series = archive.prepare_series(Series.objects.get().pk)
    assert any("left out of the volume" in w for w in series.geometry_warnings)
    run = services.queue_inference(series)

    result = services.run_inference(run.pk, load_predictor)

    assert result.state == "done", result.error
    assert Finding.objects.filter(series=series).exists()
    page = admin_client.get(reverse("archive:study_detail", args=[series.study.study_uid])).content.decode()
    assert "left out of the volume" in page and "AI ready" in page


def pool_children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.worker
def test_a_worker_killed_for_memory_twice_is_not_redelivered_a_third_time(cast, start_worker, tmp_path):
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", small_phantom_with_nodule())
    worker = start_worker(INFERENCE_MAX_ATTEMPTS="2")
    series = Series.objects.get()
    services.queue_inference(series)  # committed: the message goes to Redis now

    for attempt in (1, 2):
        wait_for(lambda: InferenceRun.objects.filter(state="running", attempts=attempt).exists(), 120, interval=0.05,
                 what=f"attempt {attempt} running")
        children = wait_for(lambda: pool_children(worker.pid), 10, what="the pool process")
        for child in children:  # what the kernel's OOM killer does to the process reading the series
            os.kill(child, signal.SIGKILL)

    run = wait_for(lambda: InferenceRun.objects.filter(state__in=["done", "failed"]).first(), 120, interval=0.25,
                   what="the run to end")
    time.sleep(2)  # a third delivery, if any, would show now
    run.refresh_from_db()
    assert run.state == "failed" and run.attempts == 2, (run.state, run.error, worker.log_path.read_text()[-3000:])
    assert run.error.startswith(KILLED)
    assert Finding.objects.count() == 0 and Study.objects.get().ai_status == "ai_failed"
    assert worker.poll() is None  # the worker itself lives on
