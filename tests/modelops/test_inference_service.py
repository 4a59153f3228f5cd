"""The inference pipeline's services, with the shipped model on this CPU (no worker process)."""
from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from tests.factories import series_bytes
from tests.phantoms import ingest_phantom, small_phantom_with_nodule
from webapp.archive import services as archive
from webapp.archive.models import Series, Study
from webapp.modelops import services
from webapp.modelops.models import InferenceRun, ModelVersion
from webapp.review.models import Finding

pytestmark = pytest.mark.django_db


def load_predictor(model):
    from ml.inference import Predictor

    return Predictor.from_checkpoint(model.path)


@pytest.fixture
def no_broker(monkeypatch):
    sent = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: sent.append((name, a)))
    return sent


@pytest.fixture
def phantom_series(cast, tmp_path, no_broker, django_capture_on_commit_callbacks):
    ph = small_phantom_with_nodule()
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", ph)
    series = Series.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        run = services.prepare_and_queue(series.pk)
    return ph, series, run


def test_the_shipped_baseline_becomes_champion_version_1(db):
    champion = services.get_champion()

    assert champion.version == 1 and champion.status == "champion"
    assert champion.path.exists() and len(champion.sha256) == 64
    assert "preprocessing" in champion.metadata or "inference" in champion.metadata


def test_a_ct_series_is_queued_on_the_gpu_queue(phantom_series, no_broker):
    _, series, run = phantom_series

    assert run.state == "queued" and run.model_version.version == 1
    assert no_broker == [("workers.infer_series", (run.pk,))]
    assert Study.objects.get().ai_status == "processing"


def test_inference_finds_the_phantom_nodule_where_it_is(phantom_series):
    ph, series, run = phantom_series
    truth = max(ph.lesions, key=lambda l: l.diameter_mm)

    result = services.run_inference(run.pk, load_predictor)

    assert result.state == "done", result.error
    run.refresh_from_db()
    assert run.device == "cpu" and run.timings["total"] > 0 and run.progress == 1.0
    findings = list(Finding.objects.filter(series=series))
    assert len(findings) == run.findings_count >= 1
    nearest = min(findings, key=lambda f: np.linalg.norm(np.subtract(f.centre_xyz_mm, truth.centre_xyz_mm)))
    assert np.linalg.norm(np.subtract(nearest.centre_xyz_mm, truth.centre_xyz_mm)) < truth.diameter_mm / 2
    assert nearest.diameter_mm == pytest.approx(truth.diameter_mm, abs=2.5)
    # the stored mask is the one that was measured: its voxels make up the reported volume
    series.refresh_from_db()
    voxel_ml = series.pixel_spacing_row_mm * series.pixel_spacing_col_mm * series.slice_spacing_mm / 1000
    assert nearest.get_mask().sum() * voxel_ml == pytest.approx(nearest.volume_ml, rel=0.02)
    assert nearest.model_version.version == 1
    assert Study.objects.get().ai_status == "ai_ready"
    # TTA is on by default: every finding and the run carry an uncertainty in [0, 1]
    assert all(f.uncertainty is not None and 0.0 <= f.uncertainty <= 1.0 for f in findings)
    assert run.case_uncertainty == pytest.approx(max(f.uncertainty for f in findings))
    # findings below the model's operating point are stored as candidates; the phantom's nodule is not one
    point = run.model_version.metadata["inference"]["operating_point"]["score"]
    assert all(f.flagged == (f.score >= point) for f in findings)
    assert nearest.flagged and not all(f.flagged for f in findings)


def test_running_again_replaces_ai_findings_and_keeps_corrected_ones(phantom_series, no_broker):
    _, series, run = phantom_series
    services.run_inference(run.pk, load_predictor)
    first = Finding.objects.filter(series=series).count()
    kept = Finding.objects.filter(series=series).first()
    kept.status = Finding.Status.ACCEPTED
    kept.save()

    services.queue_inference(series)
    services.run_inference(run.pk, load_predictor)

    # the re-run proposes everything again except where a radiologist already decided
    assert Finding.objects.filter(series=series, status="proposed").count() == first - 1
    assert Finding.objects.filter(pk=kept.pk, status="accepted").exists()
    # one row; a re-queue starts the count of attempts again (it caps redeliveries of a killed worker)
    assert InferenceRun.objects.count() == 1 and InferenceRun.objects.get().attempts == 1


def test_a_new_champion_replaces_the_old_models_untouched_proposals(phantom_series, no_broker):
    _, series, run = phantom_series
    services.run_inference(run.pk, load_predictor)
    old = ModelVersion.objects.get(version=1)
    decided = Finding.objects.filter(series=series).first()
    decided.status = Finding.Status.REJECTED
    decided.save()
    new = services.register_model_file(old.path, name="challenger", parent=old)
    services.promote(new, reason="test")

    services.run_inference(services.queue_inference(series).pk, load_predictor)

    proposals = Finding.objects.filter(series=series, status="proposed")
    assert proposals.exists() and set(proposals.values_list("model_version__version", flat=True)) == {new.version}
    assert Finding.objects.filter(pk=decided.pk, status="rejected", model_version=old).exists()


def test_a_finished_run_is_not_run_twice(phantom_series):
    _, _, run = phantom_series
    services.run_inference(run.pk, load_predictor)

    again = services.run_inference(run.pk, load_predictor)

    assert again.state == "skipped"
    assert InferenceRun.objects.get().attempts == 1


def test_a_series_without_a_model_is_marked_no_model(cast, no_broker):
    batch = archive.start_batch(cast.admin)
    import io

    for data in series_bytes(2, modality="MR"):
        archive.ingest_stream(batch, "x", io.BytesIO(data))

    run = services.prepare_and_queue(Series.objects.get().pk)

    assert run.state == "no_model" and "MR" in run.error
    assert no_broker == []
    assert Study.objects.get().ai_status == "no_model"


def test_a_series_that_is_not_a_volume_fails_with_a_reason_and_no_retry(cast, no_broker, archive_dir):
    import io

    batch = archive.start_batch(cast.admin)
    for data in series_bytes(3, rows=16, columns=16):
        archive.ingest_stream(batch, "x", io.BytesIO(data))
    series = Series.objects.get()
    for inst in series.instances.all():  # the files were damaged on disk after ingest
        path = archive_dir / inst.file_path
        path.write_bytes(path.read_bytes()[:200])
    run = services.queue_inference(series)

    result = services.run_inference(run.pk, load_predictor)

    run.refresh_from_db()
    assert result.state == "failed" and run.state == "failed"
    assert "cannot be read as a CT volume" in run.error
    assert run.attempts == 1
    assert Study.objects.get().ai_status == "ai_failed"


def test_stalled_runs_are_queued_again(phantom_series, no_broker):
    _, series, run = phantom_series
    InferenceRun.objects.filter(pk=run.pk).update(state="running", heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    no_broker.clear()

    recovered = services.recover_stalled_runs(stale_seconds=60)

    assert recovered == [run.pk]
    assert InferenceRun.objects.get().state == "queued"


def test_the_case_browser_shows_progress_then_findings(phantom_series, admin_client):
    _, series, run = phantom_series
    InferenceRun.objects.filter(pk=run.pk).update(state="running", progress=0.4)

    running = admin_client.get("/studies/").content.decode()
    services.run_inference(run.pk, load_predictor)
    done = admin_client.get("/studies/").content.decode()
    detail = admin_client.get(f"/studies/{series.study.study_uid}/").content.decode()

    assert "Processing 40%" in running
    assert "AI ready" in done and " mm</td>" in done
    assert "finding-row" in detail and "model v1" in detail


def test_admins_see_jobs_and_can_rerun(phantom_series, admin_client, cast, no_broker):
    from django.test import Client

    _, series, run = phantom_series
    reader = Client()
    reader.force_login(cast.radiologist)

    page = admin_client.get("/jobs/")
    rerun = admin_client.post(f"/studies/{series.study.study_uid}/rerun")
    denied = reader.get("/jobs/")

    assert page.status_code == 200 and "run-row" in page.content.decode()
    assert rerun.status_code == 302 and InferenceRun.objects.get().state == "queued"
    assert denied.status_code == 403
