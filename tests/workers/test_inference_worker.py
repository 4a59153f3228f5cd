"""Every uploaded study is pre-read by a real worker: end to end, killed workers, broken series,
and a broker that restarts and forgets its queue."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.conftest import free_port
from tests.factories import series_bytes
from tests.phantoms import ingest_phantom, small_phantom_with_nodule, write_phantom
from tests.workers.conftest import wait_for
from webapp.archive import services as archive
from webapp.archive.models import Series, Study
from webapp.modelops import services
from webapp.modelops.models import InferenceRun
from webapp.review.models import Finding

pytestmark = [pytest.mark.worker]


def finished_run(timeout=240):
    return wait_for(lambda: InferenceRun.objects.filter(state__in=["done", "failed"]).first(), timeout,
                    interval=0.5, what="the inference run to finish")


def test_an_uploaded_phantom_is_read_by_a_real_worker(client, cast, start_worker, tmp_path):
    ph = small_phantom_with_nodule()
    paths = write_phantom(tmp_path / "dicom", ph)
    start_worker()
    client.force_login(cast.admin)
    batch = client.post(reverse("archive:upload_batch_create")).json()["batch"]
    for start in range(0, len(paths), 32):
        files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in paths[start : start + 32]]
        client.post(reverse("archive:upload_batch_files", args=[batch]), {"files": files})

    client.post(reverse("archive:upload_batch_finish", args=[batch]))

    run = finished_run()
    assert run.state == "done", run.error
    assert run.device == "cpu" and run.model_version.version == 1
    truth = max(ph.lesions, key=lambda l: l.diameter_mm)
    distances = [np.linalg.norm(np.subtract(f.centre_xyz_mm, truth.centre_xyz_mm)) for f in Finding.objects.all()]
    assert min(distances) < truth.diameter_mm / 2
    assert Study.objects.get().ai_status == "ai_ready"
    page = client.get("/studies/").content.decode()
    assert "AI ready" in page


def test_a_worker_killed_mid_inference_loses_nothing_and_doubles_nothing(cast, start_worker, tmp_path):
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", small_phantom_with_nodule())
    first = start_worker(name="doomed")
    services.prepare_and_queue(Series.objects.get().pk)  # committed: the message goes to Redis now

    wait_for(lambda: InferenceRun.objects.filter(state="running").exists(), 60, interval=0.05, what="running")
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker, main process included: no chance to requeue
    first.wait(timeout=10)
    assert InferenceRun.objects.get().state == "running"  # stuck, as after a real crash
    time.sleep(2.5)
    start_worker(name="rescuer", INFERENCE_STALE_SECONDS="2")

    run = finished_run()
    assert run.state == "done", run.error
    assert run.attempts == 2
    assert Finding.objects.count() == run.findings_count  # exactly one set
    assert Study.objects.get().ai_status == "ai_ready"


def test_a_corrupt_series_fails_once_with_a_readable_reason(cast, start_worker, archive_dir):
    batch = archive.start_batch(cast.admin)
    for data in series_bytes(4, rows=32, columns=32):
        archive.ingest_stream(batch, "x", io.BytesIO(data))
    series = Series.objects.get()
    for inst in series.instances.all():  # the disk went bad after ingest
        path = archive_dir / inst.file_path
        path.write_bytes(path.read_bytes()[:300])
    start_worker()

    services.queue_inference(series)

    run = finished_run(60)
    time.sleep(2)  # give a retry storm the chance to show itself
    run.refresh_from_db()
    assert run.state == "failed" and run.attempts == 1
    assert "cannot be read as a CT volume" in run.error
    assert Study.objects.get().ai_status == "ai_failed"


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own (no persistence, like the machine's), so it can be restarted."""
    port = free_port()

    def start():
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() == b"PONG",
                 20, what="redis")
        return proc

    state = {"proc": start()}

    def restart():
        state["proc"].terminate()
        state["proc"].wait(timeout=10)
        state["proc"] = start()

    yield f"redis://127.0.0.1:{port}/0", restart
    state["proc"].terminate()


def test_queued_work_survives_a_broker_restart(cast, start_worker, tmp_path, private_redis, monkeypatch):
    """Redis here keeps nothing on disk, so a restart loses queued messages. The run rows are the
    truth: a starting worker (or an admin's "Requeue stalled") queues lost runs again."""
    from celery import Celery

    url, restart = private_redis
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", small_phantom_with_nodule())
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: None)
    run = services.queue_inference(Series.objects.get())
    Celery(broker=url).send_task("workers.infer_series", args=[run.pk], queue="gpu")

    restart()  # the message is gone
    time.sleep(1.5)
    start_worker(REDIS_URL=url, INFERENCE_STALE_SECONDS="1")

    done = finished_run()
    assert done.state == "done", done.error
    assert Finding.objects.count() == done.findings_count
