"""A signed-off read does not change under the reader: masks stay on the same anatomy when the slice
grid changes, and AI runs never add or replace findings on a signed-off case."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from tests.factories import ct_slice, to_bytes
from webapp.archive import quarantine
from webapp.archive import services as archive
from webapp.archive.models import QuarantinedInstance, Series, Study
from webapp.review import services as review
from webapp.review.models import Finding

from .conftest import act, ai_finding, case, ingest


def bits(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(bool).ravel()).tobytes()).decode()


def mask_centre_mm(data: dict, finding_id: int) -> np.ndarray:
    """Centre (LPS mm) of a finding's mask as the API gives it: the mask's voxels on the series
    geometry of the same answer (what the viewer draws)."""
    finding = next(f for f in data["findings"] if f["id"] == finding_id)
    geometry = data["series"][0]["geometry"]
    m = finding["mask"]
    shape = tuple(m["shape_zyx"])
    voxels = np.unpackbits(np.frombuffer(base64.b64decode(m["bits_b64"]), np.uint8), count=int(np.prod(shape)))
    zyx = np.argwhere(voxels.reshape(shape)).mean(axis=0) + np.asarray(m["origin_zyx"])
    ijk_mm = zyx[::-1] * np.asarray(geometry["spacing_zyx_mm"])[::-1]
    return np.asarray(geometry["origin_xyz_mm"]) + np.asarray(geometry["direction"]) @ ijk_mm


def add_slices(cast, indices, **spec):
    batch = archive.start_batch(cast.admin)
    for i in indices:
        outcome = archive.ingest_stream(batch, f"{i}.dcm", io.BytesIO(to_bytes(ct_slice(index=i, **spec))))
        assert outcome.outcome == "stored", outcome.reason
    archive.prepare_series(Series.objects.get().pk)


def paint(client, study, finding, origin_zyx, mask) -> dict:
    response = act(client, study, base_revision=review.get_case(study).revision, action="mask", finding_id=finding.pk,
                   mask={"origin_zyx": origin_zyx, "shape_zyx": list(mask.shape), "bits_b64": bits(mask)})
    assert response.status_code == 200, response.content
    return response.json()["finding"]


@pytest.fixture
def above(cast, model) -> Study:
    """Slices 1..6 of the factory series (z = -47.5 .. -35 mm): a slice 0 can still arrive below."""
    return ingest(cast, indices=range(1, 7))


def test_a_slice_arriving_below_does_not_move_a_painted_mask(radiologist_client, cast, above, model):
    finding = ai_finding(above, model)
    mask = np.zeros((2, 3, 3), bool)
    mask[:, 1:, :2] = True
    paint(radiologist_client, above, finding, [2, 5, 6], mask)
    before = case(radiologist_client, above)
    centre_before = mask_centre_mm(before, finding.pk)

    add_slices(cast, [0])  # a new lowest slice: every z index of the grid moves up by one

    after = case(radiologist_client, above)
    assert after["series"][0]["geometry"]["shape_zyx"][0] == before["series"][0]["geometry"]["shape_zyx"][0] + 1
    assert after["series"][0]["geometry"]["origin_xyz_mm"][2] == before["series"][0]["geometry"]["origin_xyz_mm"][2] - 2.5
    stored = next(f for f in before["findings"] if f["id"] == finding.pk)["mask"]
    moved = next(f for f in after["findings"] if f["id"] == finding.pk)["mask"]
    z, y, x = stored["origin_zyx"]
    assert moved["origin_zyx"] == [z + 1, y, x] and moved["bits_b64"] == stored["bits_b64"]
    assert mask_centre_mm(after, finding.pk) == pytest.approx(centre_before, abs=1e-6)
    assert centre_before[2] == pytest.approx(-41.25)  # grid indices 2 and 3 of slices from -47.5 mm: -42.5, -40
    # the finding's own measurements are unchanged
    assert next(f for f in after["findings"] if f["id"] == finding.pk)["centre_mm"] == \
        next(f for f in before["findings"] if f["id"] == finding.pk)["centre_mm"]


def test_a_released_late_slice_below_a_signed_off_read_keeps_the_mask_on_the_same_anatomy(
        client, cast, above, model, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: None)  # no worker in this test
    finding = ai_finding(above, model)
    client.force_login(cast.radiologist)
    paint(client, above, finding, [0, 4, 4], np.ones((3, 2, 2), bool))
    act(client, above, base_revision=review.get_case(above).revision, action="accept", finding_id=finding.pk)
    assert act(client, above, base_revision=review.get_case(above).revision, action="signoff").status_code == 200
    centre_before = mask_centre_mm(case(client, above), finding.pk)

    batch = archive.start_batch(cast.admin)
    late = archive.ingest_stream(batch, "0.dcm", io.BytesIO(to_bytes(ct_slice(index=0))))
    assert late.outcome == "quarantined"
    with django_capture_on_commit_callbacks(execute=True):
        quarantine.release(QuarantinedInstance.objects.get().pk, actor=cast.admin)
    archive.prepare_series(Series.objects.get().pk)

    after = case(client, above)
    assert after["case"]["review_status"] == "in_review"
    assert next(f for f in after["findings"] if f["id"] == finding.pk)["mask"]["origin_zyx"] == [1, 4, 4]
    assert mask_centre_mm(after, finding.pk) == pytest.approx(centre_before, abs=1e-6)


def test_a_late_slice_in_the_middle_that_halves_the_spacing_keeps_the_mask_centre(radiologist_client, cast, model):
    study = ingest(cast, indices=[0, 2, 4, 6, 8])  # 5 mm apart
    finding = ai_finding(study, model)
    paint(radiologist_client, study, finding, [1, 5, 5], np.ones((2, 2, 2), bool))
    before = case(radiologist_client, study)
    assert before["series"][0]["geometry"]["spacing_zyx_mm"][0] == 5.0

    add_slices(cast, [1, 3, 5, 7])  # now 2.5 mm apart: the mask is resampled onto the finer grid

    after = case(radiologist_client, study)
    assert after["series"][0]["geometry"]["spacing_zyx_mm"][0] == 2.5
    assert mask_centre_mm(after, finding.pk) == pytest.approx(mask_centre_mm(before, finding.pk), abs=1e-6)
    moved = next(f for f in after["findings"] if f["id"] == finding.pk)["mask"]
    assert moved["origin_zyx"][1:] == [5, 5] and moved["shape_zyx"][1:] == [2, 2]


def test_a_mask_stored_before_anchoring_keeps_its_voxel_origin(radiologist_client, above, model):
    finding = ai_finding(above, model)  # set without a grid: no patient-space anchor

    data = case(radiologist_client, above)

    assert next(f for f in data["findings"] if f["id"] == finding.pk)["mask"]["origin_zyx"] == [1, 5, 5]
    assert Finding.objects.get(pk=finding.pk).mask_origin_xyz_mm is None


# --- AI runs on a signed-off case ------------------------------------------------------------------


def load_predictor(model):
    from ml.inference import Predictor

    return Predictor.from_checkpoint(model.path)


def test_an_ai_run_never_adds_findings_to_a_signed_off_case(cast, tmp_path, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    """The radiologist signs the case off (a negative read) while the AI run is still queued; the run
    then finds the phantom's nodule but stores nothing, and a re-run of unreviewed studies leaves it out."""
    from tests.phantoms import ingest_phantom, small_phantom_with_nodule
    from webapp.modelops import services as modelops

    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: None)  # the run is driven here
    batch = archive.start_batch(cast.admin)
    ingest_phantom(batch, tmp_path / "dicom", small_phantom_with_nodule())
    series = Series.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        run = modelops.prepare_and_queue(series.pk)
    review.sign_off_case(series.study, cast.radiologist, base_revision=0)

    result = modelops.run_inference(run.pk, load_predictor)

    assert result.state == "done" and result.findings == 0, result.error
    run.refresh_from_db()
    assert run.state == "done" and run.stage == "case signed off: not stored" and run.findings_count == 0
    assert not Finding.objects.filter(series=series).exists()
    assert Study.objects.get().review_status == "signed_off"
    assert modelops.rerun_unreviewed(actor=cast.admin) == 0


def test_ai_findings_replaced_on_an_open_case_are_never_those_of_a_signed_off_one(cast, above, model):
    """replace_ai_findings (what every run calls) refuses a signed-off case under the case lock and
    keeps its findings as they were; the same call on an open case replaces untouched proposals."""
    from webapp.modelops.models import InferenceRun

    series = above.series.get()
    old = ai_finding(above, model)
    run = InferenceRun.objects.create(series=series, model_version=model)

    assert review.replace_ai_findings(run, []) == 0
    assert not Finding.objects.filter(pk=old.pk).exists()  # open case: an untouched proposal is replaced

    kept = ai_finding(above, model, flagged=False)
    review.sign_off_case(above, cast.radiologist, base_revision=0)
    with pytest.raises(review.CaseSignedOff):
        review.replace_ai_findings(run, [])
    assert Finding.objects.filter(pk=kept.pk).exists()
