"""Retraining through a real `train` worker: a tiny run end to end, a worse challenger kept out, and a
roll-back that the inference worker follows on its next run."""
from __future__ import annotations

import shutil

import pytest

from tests.phantoms import ingest_phantom, small_phantom_with_nodule
from tests.workers.conftest import wait_for
from webapp.archive import services as archive
from webapp.archive.models import Series, Study
from webapp.modelops import services as modelops
from webapp.modelops.models import InferenceRun, ModelVersion
from webapp.review import services as review
from webapp.training import dataset, services
from webapp.training.models import SnapshotCase, TrainingRun
from webapp.training.promotion import decide

pytestmark = [pytest.mark.worker]


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("train-cache")  # training phantoms, built once for the session


def tiny(phantom_cache, **overrides) -> dict:
    """Worker settings for a run of seconds: 2 + 2 steps, one small training phantom, one benchmark phantom."""
    return {"RETRAIN_DET_STEPS": "2", "RETRAIN_SEG_STEPS": "2", "RETRAIN_PHANTOMS_SMALL": "1",
            "RETRAIN_PHANTOMS_FULL": "0", "RETRAIN_BENCHMARK_N": "1", "RETRAIN_BENCHMARK_PRESET": "small",
            "RETRAIN_TORCH_THREADS": "1", "RETRAIN_CACHE_DIR": str(phantom_cache), **overrides}


def reviewed_phantoms(cast, tmp_path, settings) -> tuple[Study, Study]:
    """The same small phantom as two patients, each signed off with its largest nodule added by a
    radiologist and one rejected AI finding; the held-out share puts exactly one of them aside."""
    ph = small_phantom_with_nodule()
    truth = max(ph.lesions, key=lambda l: l.diameter_mm)
    studies = []
    for patient in ("TRAIN-ME", "HOLD-ME"):
        batch = archive.start_batch(cast.admin)
        ingest_phantom(batch, tmp_path / patient, ph, patient_id=patient)
        study = Study.objects.get(patient_id=patient)
        series = study.series.get()
        archive.prepare_series(series.pk)
        r = review.add_finding(study, cast.radiologist, base_revision=0, series_uid=series.series_uid,
                               centre_mm=list(truth.centre_xyz_mm), diameter_mm=truth.diameter_mm)
        review.sign_off_case(study, cast.radiologist, base_revision=r.revision)
        studies.append(study)
    fractions = sorted(dataset.hash_fraction(s.study_uid) for s in studies)
    share = sum(fractions) / 2
    settings.RETRAIN_HELDOUT_SHARE = share
    held = min(studies, key=lambda s: dataset.hash_fraction(s.study_uid))
    train = next(s for s in studies if s != held)
    return train, held, share


def finished(run_id: int, timeout: float = 900) -> TrainingRun:
    return wait_for(lambda: TrainingRun.objects.filter(pk=run_id, state__in=["done", "failed"]).first(), timeout,
                    interval=1.0, what=f"training run {run_id}")


def test_a_tiny_retraining_run_makes_a_challenger_with_metrics(cast, start_worker, tmp_path, settings, phantom_cache):
    train, held, share = reviewed_phantoms(cast, tmp_path, settings)
    champion = modelops.get_champion()
    start_worker(queues="train", name="trainer", RETRAIN_HELDOUT_SHARE=str(share), **tiny(phantom_cache))

    run = services.request_retraining("manual", actor=cast.admin)
    run = finished(run.pk)

    assert run.state == "done", run.error
    challenger = run.challenger
    assert challenger.version == 2 and challenger.parent == champion and challenger.path.exists()
    assert challenger.metadata["parent"]["sha256"] == champion.sha256
    assert challenger.metadata["training"]["data"]["review"]["case_ids"] == [train.study_uid]
    for metrics in (run.champion_metrics, run.challenger_metrics):
        assert metrics["heldout"]["n_cases"] == 1 and metrics["heldout"]["n_lesions"] == 1
        assert metrics["phantom"]["n_cases"] == 1 and "cpm" in metrics["phantom"]
    assert (run.decision == "promoted") == decide(run.champion_metrics, run.challenger_metrics, settings.PROMOTION_RULE)[0]
    assert run.decision_reason and run.timings["finetune"] > 0 and run.progress == 1.0
    challenger.refresh_from_db()
    assert challenger.status == ("champion" if run.decision == "promoted" else "rejected")
    # the snapshot: which study at which revision went where; the held-out study never trains
    rows = {row.study_uid: row for row in SnapshotCase.objects.filter(snapshot=run.snapshot)}
    assert rows[train.study_uid].split == "train" and rows[train.study_uid].revision == 2
    assert rows[held.study_uid].split == "heldout"
    assert not SnapshotCase.objects.filter(study_uid=held.study_uid, split="train").exists()
    assert run.snapshot.n_train_cases == 1 and run.snapshot.n_lesions == 1


def test_a_challenger_made_worse_is_not_promoted(cast, start_worker, tmp_path, settings, phantom_cache):
    reviewed_phantoms(cast, tmp_path, settings)
    champion = modelops.get_champion()
    # A learning rate 50,000 times too large wrecks the weights in two steps.
    start_worker(queues="train", name="trainer", RETRAIN_HELDOUT_SHARE=str(settings.RETRAIN_HELDOUT_SHARE),
                 **tiny(phantom_cache, RETRAIN_LR="10"))

    run = finished(services.request_retraining("manual", actor=cast.admin).pk)

    assert run.state == "done", run.error
    assert run.decision == "rejected" and "not above" in run.decision_reason
    worse, better = run.challenger_metrics["heldout"]["cpm"] or 0.0, run.champion_metrics["heldout"]["cpm"]
    assert worse < better
    run.challenger.refresh_from_db()
    assert run.challenger.status == "rejected" and modelops.get_champion() == champion


def test_after_a_roll_back_the_inference_worker_reads_with_the_previous_champion(cast, start_worker, tmp_path):
    v1 = modelops.get_champion()
    copy = tmp_path / "v2.pt"
    shutil.copy(v1.path, copy)
    v2 = modelops.register_model_file(copy, name="finetuned", parent=v1)
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", small_phantom_with_nodule())
    series = Series.objects.get()
    archive.prepare_series(series.pk)
    worker = start_worker(queues="gpu", name="reader")

    modelops.promote(v2, actor=cast.admin)
    first = modelops.queue_inference(series, actor=cast.admin)
    wait_for(lambda: InferenceRun.objects.filter(pk=first.pk, state="done").exists(), 300, interval=0.5, what="v2 run")
    modelops.roll_back(actor=cast.admin)
    second = modelops.queue_inference(series, actor=cast.admin)
    wait_for(lambda: InferenceRun.objects.filter(pk=second.pk, state__in=["done", "failed"]).exists(), 300,
             interval=0.5, what="run after roll-back")

    assert InferenceRun.objects.get(pk=first.pk).model_version == v2
    assert InferenceRun.objects.get(pk=second.pk).model_version == v1
    assert InferenceRun.objects.get(pk=second.pk).state == "done"
    log = worker.log_path.read_text()
    assert log.index("loaded model v2") < log.index("loaded model v1")  # the worker swapped its model
    assert ModelVersion.objects.get(pk=v2.pk).status == "retired"
