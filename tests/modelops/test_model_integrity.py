"""A model file is loaded only when it is the file that was registered (its SHA-256): by inference,
by training and by promotion. A changed shipped baseline becomes a new challenger, never a silent swap."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.modelops.test_inference_service import load_predictor, no_broker, phantom_series  # noqa: F401 (fixtures)
from webapp.accounts.models import AuditEvent
from webapp.modelops import services
from webapp.modelops.models import ModelVersion
from webapp.review.models import Finding
from webapp.training import services as training
from webapp.training.models import TrainingRun

pytestmark = pytest.mark.django_db
REFUSED = "does not match its registered SHA-256; refusing to load"


def flip_a_byte(path, *, keep_mtime: bool = False) -> None:
    """Change one byte in the middle of the file (same size); optionally put the old mtime back."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def copy_v2(db, tmp_path):
    """v2: a registered copy of the shipped model in this test's folder (v1 stays the shipped file)."""
    v1 = services.get_champion()
    copy = tmp_path / "v2.pt"
    shutil.copy(v1.path, copy)
    return services.register_model_file(copy, name="finetuned", parent=v1)


def test_a_run_of_a_changed_model_file_fails_with_the_reason_and_loads_nothing(phantom_series, copy_v2):
    _, series, _ = phantom_series
    run = services.queue_inference(series, model=copy_v2)
    flip_a_byte(copy_v2.path)
    loaded = []

    result = services.run_inference(run.pk, lambda model: loaded.append(model) or load_predictor(model))

    run.refresh_from_db()
    assert result.state == run.state == "failed" and loaded == []
    assert f"model file {copy_v2.file_path} (v2) {REFUSED}" in run.error
    assert not Finding.objects.filter(series=series).exists()
    event = AuditEvent.objects.get(action="modelops.model.integrity_failed")
    assert event.object_id == "2" and event.details["registered_sha256"] == copy_v2.sha256
    assert event.details["file_sha256"] != copy_v2.sha256


def test_the_registered_file_is_read(phantom_series, copy_v2):
    _, series, _ = phantom_series
    run = services.queue_inference(series, model=copy_v2)

    result = services.run_inference(run.pk, load_predictor)

    assert result.state == "done", result.error
    assert not AuditEvent.objects.filter(action="modelops.model.integrity_failed").exists()


def test_a_file_rewritten_with_its_old_size_and_mtime_is_still_caught(copy_v2):
    services.verify_model_file(copy_v2)  # hashed once and remembered for this file's state
    flip_a_byte(copy_v2.path, keep_mtime=True)

    with pytest.raises(services.ModelIntegrityError, match=REFUSED):
        services.verify_model_file(copy_v2)


def test_a_missing_model_file_is_refused(copy_v2):
    copy_v2.path.unlink()

    with pytest.raises(services.ModelIntegrityError, match="the model file of v2 is missing"):
        services.verify_model_file(copy_v2)


def test_a_changed_file_cannot_be_promoted(copy_v2, cast):
    flip_a_byte(copy_v2.path)

    with pytest.raises(services.RegistryError, match=REFUSED):
        services.promote(copy_v2, actor=cast.admin, reason="looks fine")

    assert services.get_champion().version == 1
    assert not AuditEvent.objects.filter(action="modelops.model.promoted").exists()
    assert AuditEvent.objects.filter(action="modelops.model.integrity_failed", object_id="2").exists()


def test_training_refuses_a_champion_whose_file_changed(copy_v2, cast):
    services.promote(copy_v2, actor=cast.admin, reason="test")
    run = TrainingRun.objects.create(trigger="manual", parent=copy_v2)
    flip_a_byte(copy_v2.path)

    training.run_training(run.pk)

    run.refresh_from_db()
    assert run.state == "failed" and REFUSED in run.error
    assert run.challenger is None


def test_a_changed_shipped_baseline_is_registered_as_a_new_challenger(db, tmp_path, settings, cast):
    """An update that replaced ml/weights/baseline-v1.pt: v1 (the old bytes) is refused, the new file is
    offered as a challenger an admin can promote; the refusal does not register it twice."""
    from ml.checkpoint import file_sha256, load_model_file, save_model_file

    shipped = tmp_path / "weights" / "baseline-v1.pt"
    shipped.parent.mkdir()
    shutil.copy(settings.BASE_DIR / settings.BASELINE_MODEL_PATH, shipped)
    settings.BASELINE_MODEL_PATH = str(shipped)
    v1 = services.get_champion()
    payload = load_model_file(shipped)
    payload["note"] = "retrained upstream"
    save_model_file(shipped, payload)

    for _ in range(2):
        with pytest.raises(services.ModelIntegrityError) as refused:
            services.verify_model_file(v1)

    assert REFUSED in str(refused.value) and "registered as v2 (a challenger)" in str(refused.value)
    v2 = ModelVersion.objects.get(version=2)
    assert ModelVersion.objects.count() == 2
    assert (v2.status, v2.name, v2.file_path, v2.sha256) == ("challenger", "baseline (changed file)", v1.file_path,
                                                             file_sha256(shipped))
    services.promote(v2, actor=cast.admin, reason="the updated baseline")
    assert services.get_champion() == v2
    services.verify_model_file(v2)
