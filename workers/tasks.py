"""Celery tasks: each takes IDs, calls one service, returns JSON values."""
from __future__ import annotations

import logging

from celery.signals import worker_ready
from django.db import OperationalError

from webapp.archive.models import Series
from webapp.celery_app import app
from webapp.modelops import services as modelops
from webapp.training import services as training

log = logging.getLogger(__name__)

# One model in memory per worker process, loaded on first use and kept; a new champion (another
# model version in the run) replaces it.
_predictor: dict = {}


def predictor_for(model_version):
    from ml.inference import Predictor

    key = (model_version.pk, model_version.sha256)
    if key not in _predictor:
        _predictor.clear()
        predictor = Predictor.from_checkpoint(model_version.path)
        _predictor[key] = predictor
        log.info("loaded model v%s (%s) on %s", model_version.version, model_version.name, predictor.device)
    return _predictor[key]


@app.task(name="workers.prepare_series", soft_time_limit=300, time_limit=360,
          autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def prepare_series(series_id: int, quiet_seconds: float = 0) -> dict:
    """Series geometry and thumbnail, then its inference run is queued. Deleted series are skipped;
    with ``quiet_seconds`` a series still receiving instances is left to a later check."""
    try:
        run = modelops.prepare_and_queue(series_id, quiet_seconds)
    except Series.DoesNotExist:
        log.warning("series %s no longer exists", series_id)
        return {"series_id": series_id, "skipped": "deleted"}
    return {"series_id": series_id, "inference_run": run.pk if run else None, "state": run.state if run else None}


@app.task(name="workers.infer_series", soft_time_limit=1800, time_limit=1900,
          autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def infer_series(run_id: int) -> dict:
    """Detection + segmentation of one series. Expected failures end the run (no retry storm);
    database hiccups are retried with backoff."""
    result = modelops.run_inference(run_id, predictor_for)
    return {"run_id": result.run_id, "state": result.state, "findings": result.findings, "error": result.error}


@app.task(name="workers.request_retraining", soft_time_limit=60, time_limit=90,
          autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def request_retraining(trigger: str = "signoffs") -> dict:
    """Beat's nightly run and every sign-off come here (cpu queue, cheap): queue a training run if due."""
    run = training.request_retraining(trigger)
    return {"trigger": trigger, "training_run": run.pk if run else None}


@app.task(name="workers.retrain", soft_time_limit=12 * 3600, time_limit=12 * 3600 + 300)
def retrain(run_id: int) -> dict:
    """One training run on the ``train`` queue (its own worker, concurrency 1). Torch's CPU threads
    are capped so the inference worker on the same machine keeps its cores."""
    import torch
    from django.conf import settings

    torch.set_num_threads(max(1, settings.RETRAIN_TORCH_THREADS))
    return training.run_training(run_id)


@app.task(name="workers.pipeline_upkeep", soft_time_limit=120, time_limit=150, ignore_result=True)
def pipeline_upkeep() -> dict:
    """Every minute (beat): abandoned upload batches are finished, runs of dead workers re-queued."""
    return modelops.pipeline_upkeep()


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs):
    """A worker that starts picks up runs whose worker died or whose message the broker lost."""
    import torch

    log.info("inference device: %s", "cuda (" + torch.cuda.get_device_name(0) + ")" if torch.cuda.is_available() else "cpu")
    try:
        modelops.recover_stalled_runs()
    except Exception:  # never keep a worker from starting
        log.exception("could not recover stalled inference runs")
    try:
        training.recover_stalled_training()
    except Exception:
        log.exception("could not recover stalled training runs")
