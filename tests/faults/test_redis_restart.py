"""Redis (the Celery broker) restarts while inference runs wait in its queue and one is running.

The worker is not restarted. Without persistence the restart loses every queued message; the run rows
are the truth and the minute's upkeep (beat) queues those runs again. With an append-only file the
messages survive and nothing is queued twice. Either way every run finishes exactly once."""
from __future__ import annotations

import io

import numpy as np
import pytest
from celery import Celery
from django.conf import settings as django_settings

from tests.factories import ct_slice, to_bytes
from tests.faults.conftest import wait_for
from webapp import jobs
from webapp.archive import services as archive
from webapp.archive.models import Series
from webapp.modelops import services
from webapp.modelops.models import InferenceRun
from webapp.review.models import Finding

pytestmark = [pytest.mark.faults, pytest.mark.worker]

RUNS = 4


def _series_with_a_nodule(batch, k: int) -> Series:
    """16 slices of 64 x 64 (0.7 mm, 2.5 mm apart) with one round 11 mm nodule: a read of a few seconds."""
    yy, xx = np.mgrid[:64, :64]
    for i in range(16):
        radius_mm = max(0.0, 5.5**2 - ((i - 8) * 2.5) ** 2) ** 0.5
        hu = np.full((64, 64), -850, np.int16)
        hu[((yy - 32) ** 2 + (xx - 32) ** 2) * 0.49 < radius_mm**2] = 30
        data = to_bytes(ct_slice(study=f"fault-redis-{k}", series=f"fault-redis-{k}-axial", index=i, rows=64,
                                 columns=64, hu=hu, patient_id=f"FAULT-R{k}"))
        outcome = archive.ingest_stream(batch, f"{k}/{i}.dcm", io.BytesIO(data))
        assert outcome.outcome == "stored", outcome.reason
    return Series.objects.get(series_uid=outcome.series_uid)


@pytest.mark.parametrize("appendonly", [False, True], ids=["redis-without-persistence", "redis-with-appendonly"])
def test_a_redis_restart_with_runs_queued_ends_with_every_run_read_exactly_once(
        appendonly, cast, server_env, make_redis, processes, monkeypatch):
    broker = make_redis(appendonly=appendonly)
    app = Celery("radloop")  # the web app's Celery configuration, sending to this test's Redis
    app.config_from_object(django_settings, namespace="CELERY")
    app.conf.broker_url = broker.url
    monkeypatch.setattr(jobs, "app", app)
    batch = archive.start_batch(cast.admin)
    series = [_series_with_a_nodule(batch, k) for k in range(RUNS)]
    processes.worker({**server_env, "REDIS_URL": broker.url, "INFERENCE_TTA": "false"}, "cpu,gpu", "reader")
    jobs.enqueue("workers.pipeline_upkeep")  # beat's minute tick, before the fault

    runs = [services.queue_inference(s) for s in series]
    wait_for(lambda: InferenceRun.objects.filter(state="running").exists(), 120, "the first run to start", 0.05)
    assert InferenceRun.objects.filter(state="queued").count() >= RUNS - 1  # waiting in Redis
    broker.restart()
    jobs.enqueue("workers.pipeline_upkeep")  # beat's next tick, after the fault

    def all_finished():
        return not InferenceRun.objects.filter(pk__in=[r.pk for r in runs]).exclude(state__in=["done", "failed"]).exists()

    wait_for(all_finished, 150, "every run to finish (a run stuck 'queued' lost its message)", 0.5)
    finished = list(InferenceRun.objects.filter(pk__in=[r.pk for r in runs]).order_by("pk"))
    assert [(r.state, r.error) for r in finished] == [("done", "")] * RUNS
    assert [r.attempts for r in finished] == [1] * RUNS  # read once each: nothing queued twice
    for run in finished:
        assert run.findings_count >= 1
        assert Finding.objects.filter(series_id=run.series_id).count() == run.findings_count  # one set, not two
    assert Finding.objects.count() == sum(r.findings_count for r in finished)
