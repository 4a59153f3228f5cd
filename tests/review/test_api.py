"""The review API through the real HTTP stack, as the viewer calls it."""
from __future__ import annotations

import base64

import numpy as np
import pytest

from webapp.accounts.models import AuditEvent
from webapp.archive.models import Study
from webapp.review.models import Finding, ReviewRevision

from .conftest import API, act, ai_finding, case

pytestmark = pytest.mark.django_db


def bits(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(mask.astype(bool).ravel()).tobytes()).decode()


# --- reading a case -------------------------------------------------------------------------------


def test_a_radiologist_reads_the_case_with_geometry_findings_and_an_audit_entry(radiologist_client, cast, study, findings):
    data = case(radiologist_client, study)

    assert data["case"] == {"study_uid": study.study_uid, "revision": 0, "review_status": "unreviewed", "assignee": None,
                            "signed_off_by": None, "signed_off_at": None, "comment": "", "notice": ""}
    (series,) = data["series"]
    assert series["modality"] == "CT" and series["num_instances"] == 6
    assert series["geometry"] == {"origin_xyz_mm": [-100.0, -100.0, -50.0], "spacing_zyx_mm": [2.5, 0.7, 0.7],
                                  "direction": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "shape_zyx": [6, 16, 16]}
    big = data["findings"][0]
    assert big["id"] == findings[0].pk and big["source"] == "ai" and big["status"] == "proposed"
    assert big["diameter_mm"] == 6.0 and big["model_version"] == "baseline-v3" and big["uncertainty"] == 0.2
    assert big["flagged"] is True and big["score"] == 0.9
    assert big["mask"]["origin_zyx"] == [1, 5, 5] and big["mask"]["shape_zyx"] == [2, 2, 2]
    assert base64.b64decode(big["mask"]["bits_b64"]) == np.packbits(np.ones(8, bool)).tobytes()
    assert data["revisions"] == []
    event = AuditEvent.objects.get(action="review.case.viewed")
    assert event.actor == cast.radiologist and event.object_id == study.study_uid


def test_the_geometry_is_the_grid_the_ai_reads(radiologist_client, cast, archive_dir):
    """Same origin, spacing, direction and shape as ml.volumes.load_series on the stored files,
    for an oblique series with a missing slice."""
    from ml.volumes import load_series
    from webapp.archive.storage import archive_storage

    from .conftest import ingest

    study = ingest(cast, indices=[0, 1, 3, 4, 5], series="oblique", study="obl",
                   orientation=(1, 0, 0, 0, 0.8660254, -0.5))
    paths = [archive_storage().path(p) for p in study.series.get().instances.values_list("file_path", flat=True)]
    volume, _ = load_series(paths)

    geometry = case(radiologist_client, study)["series"][0]["geometry"]

    assert geometry["shape_zyx"] == list(volume.shape) == [6, 16, 16]
    assert np.allclose(geometry["origin_xyz_mm"], volume.origin_xyz_mm)
    assert np.allclose(geometry["spacing_zyx_mm"], volume.spacing_zyx_mm)
    assert np.allclose(geometry["direction"], volume.direction)


def test_anonymous_is_401_and_other_roles_403_in_json(client, cast, study):
    from webapp.accounts.models import Role
    from webapp.accounts.services import ensure_user

    uploader, _ = ensure_user("ursula-uploader", "pw-uploader-1", Role.UPLOADER)
    urls = [f"{API}/studies/{study.study_uid}/", f"{API}/next/"]

    for url in urls:
        response = client.get(url)
        assert response.status_code == 401 and "error" in response.json()
    assert act(client, study, base_revision=0, action="signoff").status_code == 401
    for user in (uploader, cast.outsider):
        client.force_login(user)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 403 and response.json()["error"] == "Your role does not allow reviewing cases."
        assert act(client, study, base_revision=0, action="signoff").status_code == 403
    assert Study.objects.get().review_status == "unreviewed" and not ReviewRevision.objects.exists()


def test_admins_read_cases_but_do_not_change_findings(admin_client, study, findings):
    assert admin_client.get(f"{API}/studies/{study.study_uid}/").status_code == 200
    response = act(admin_client, study, base_revision=0, action="accept", finding_id=findings[0].pk)

    assert response.status_code == 403 and "not a clinical role" in response.json()["error"]
    assert Finding.objects.get(pk=findings[0].pk).status == "proposed" and not ReviewRevision.objects.exists()


def test_unknown_study_is_404_json(radiologist_client, cast):
    response = radiologist_client.get(f"{API}/studies/1.2.3/")

    assert response.status_code == 404 and response.json() == {"error": "No such study."}


def test_a_post_without_the_csrf_header_is_refused_in_json(cast, study, findings):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.radiologist)

    response = act(client, study, base_revision=0, action="accept", finding_id=findings[0].pk)

    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert Finding.objects.get(pk=findings[0].pk).status == "proposed"


# --- actions, each writing one revision ------------------------------------------------------------


def test_accept_writes_revision_1_with_before_after_who_and_model_version(radiologist_client, cast, study, findings, model):
    response = act(radiologist_client, study, base_revision=0, action="accept", finding_id=findings[0].pk)

    body = response.json()
    assert response.status_code == 200 and body["revision"] == 1
    assert body["case"]["revision"] == 1 and body["case"]["review_status"] == "in_review"
    assert body["finding"]["status"] == "accepted"
    rev = ReviewRevision.objects.get()
    assert (rev.revision, rev.action, rev.user, rev.username) == (1, "accept", cast.radiologist, "rita-radiologist")
    assert rev.finding_id == findings[0].pk and rev.model_version == model
    assert rev.before["status"] == "proposed" and rev.after["status"] == "accepted"
    assert Study.objects.get().review_status == "in_review"
    event = AuditEvent.objects.get(action="review.finding.accepted")
    assert event.actor == cast.radiologist and event.details == {"revision": 1, "finding": findings[0].pk}
    revisions = case(radiologist_client, study)["revisions"]
    assert revisions[0]["revision"] == 1 and revisions[0]["user"] == "rita-radiologist" and revisions[0]["action"] == "accept"


def test_reject_keeps_the_reason(radiologist_client, study, findings):
    response = act(radiologist_client, study, base_revision=0, action="reject", finding_id=findings[1].pk, reason="vessel")

    assert response.json()["finding"]["status"] == "rejected" and response.json()["finding"]["reject_reason"] == "vessel"
    assert Finding.objects.get(pk=findings[1].pk).reject_reason == "vessel"
    assert AuditEvent.objects.get(action="review.finding.rejected").details["reason"] == "vessel"


def test_edit_moves_the_finding_and_recomputes_its_box(radiologist_client, study, findings):
    response = act(radiologist_client, study, base_revision=0, action="edit", finding_id=findings[0].pk,
                   centre_mm=[-95.0, -94.0, -40.0], diameter_mm=8.0)

    f = response.json()["finding"]
    assert response.status_code == 200 and f["status"] == "edited"
    assert f["centre_mm"] == [-95.0, -94.0, -40.0] and f["diameter_mm"] == 8.0
    assert f["bbox_min_mm"] == [-99.0, -98.0, -44.0] and f["bbox_max_mm"] == [-91.0, -90.0, -36.0]
    # the mask and what was measured on it no longer describe the outline
    assert f["mask"] is None and f["volume_ml"] is None and f["mean_hu"] is None
    rev = ReviewRevision.objects.get()
    assert rev.before["centre_mm"] == [-96.5, -96.5, -45.0] and rev.before["mask"] is not None
    assert rev.after["centre_mm"] == [-95.0, -94.0, -40.0]


def test_a_painted_mask_is_measured_in_ml_mm_and_hu(radiologist_client, study, findings):
    mask = np.ones((3, 4, 4), bool)  # slices 1..3, rows and columns 4..7: inside the 40+z HU block

    response = act(radiologist_client, study, base_revision=0, action="mask", finding_id=findings[0].pk,
                   mask={"origin_zyx": [1, 4, 4], "shape_zyx": [3, 4, 4], "bits_b64": bits(mask)})

    f = response.json()["finding"]
    assert response.status_code == 200 and f["status"] == "edited"
    voxel_ml = 2.5 * 0.7 * 0.7 / 1000
    assert f["volume_ml"] == pytest.approx(48 * voxel_ml)
    assert f["diameter_mm"] == pytest.approx((6 * 48 * 2.5 * 0.49 / np.pi) ** (1 / 3))
    assert f["mean_hu"] == pytest.approx(42.0)  # mean of 41, 42, 43
    assert f["centre_mm"] == pytest.approx([-100 + 5.5 * 0.7, -100 + 5.5 * 0.7, -50 + 2 * 2.5])
    assert f["bbox_min_mm"] == pytest.approx([-100 + 3.5 * 0.7, -100 + 3.5 * 0.7, -50 + 0.5 * 2.5])
    assert f["bbox_max_mm"] == pytest.approx([-100 + 7.5 * 0.7, -100 + 7.5 * 0.7, -50 + 3.5 * 2.5])
    assert f["mask"]["origin_zyx"] == [1, 4, 4] and f["mask"]["shape_zyx"] == [3, 4, 4]


def test_a_mask_is_stored_cropped_to_what_was_painted(radiologist_client, study, findings):
    mask = np.zeros((6, 16, 16), bool)
    mask[2, 6:8, 9] = True

    response = act(radiologist_client, study, base_revision=0, action="mask", finding_id=findings[0].pk,
                   mask={"origin_zyx": [0, 0, 0], "shape_zyx": [6, 16, 16], "bits_b64": bits(mask)})

    m = response.json()["finding"]["mask"]
    assert m["origin_zyx"] == [2, 6, 9] and m["shape_zyx"] == [1, 2, 1]
    assert response.json()["finding"]["mean_hu"] == pytest.approx(42.0)


def test_mean_hu_on_a_synthesised_gap_slice_is_interpolated(radiologist_client, cast, model):
    from .conftest import ingest

    study = ingest(cast, indices=[0, 1, 3, 4], series="gap-ct", study="gap")  # slice 2 is missing
    f = ai_finding(study, model)

    response = act(radiologist_client, study, base_revision=0, action="mask", finding_id=f.pk,
                   mask={"origin_zyx": [2, 5, 5], "shape_zyx": [1, 1, 1], "bits_b64": bits(np.ones((1, 1, 1)))})

    assert response.json()["finding"]["mean_hu"] == pytest.approx(42.0)  # halfway between 41 and 43
    assert response.json()["finding"]["centre_mm"][2] == pytest.approx(-45.0)


def test_add_creates_an_accepted_radiologist_finding(radiologist_client, cast, study, findings):
    response = act(radiologist_client, study, base_revision=0, action="add", series_uid=study.series.get().series_uid,
                   centre_mm=[-95.0, -95.0, -45.0], diameter_mm=5.0, label="ground_glass")

    f = response.json()["finding"]
    assert response.status_code == 200
    assert (f["source"], f["status"], f["label"], f["model_version"]) == ("radiologist", "accepted", "ground_glass", None)
    assert f["bbox_min_mm"] == [-97.5, -97.5, -47.5]
    row = Finding.objects.get(pk=f["id"])
    assert row.created_by == cast.radiologist
    rev = ReviewRevision.objects.get()
    assert rev.before is None and rev.after["id"] == f["id"] and rev.model_version is None
    assert AuditEvent.objects.filter(action="review.finding.added").count() == 1


def test_add_with_a_mask_takes_its_measurements_from_the_mask(radiologist_client, study):
    response = act(radiologist_client, study, base_revision=0, action="add", series_uid=study.series.get().series_uid,
                   centre_mm=[-95.0, -95.0, -45.0], diameter_mm=5.0,
                   mask={"origin_zyx": [2, 4, 4], "shape_zyx": [1, 2, 2], "bits_b64": bits(np.ones((1, 2, 2)))})

    f = response.json()["finding"]
    assert f["volume_ml"] == pytest.approx(4 * 2.5 * 0.49 / 1000) and f["mean_hu"] == pytest.approx(42.0)
    assert f["centre_mm"] == pytest.approx([-100 + 4.5 * 0.7, -100 + 4.5 * 0.7, -45.0])


def test_label_and_comments(radiologist_client, study, findings):
    r1 = act(radiologist_client, study, base_revision=0, action="label", finding_id=findings[0].pk, label="part_solid")
    r2 = act(radiologist_client, study, base_revision=1, action="comment", finding_id=findings[0].pk, text="grew since 2024")
    r3 = act(radiologist_client, study, base_revision=2, action="comment", text="  Follow-up CT in 3 months. ")

    assert r1.json()["finding"]["label"] == "part_solid" and r1.json()["finding"]["status"] == "proposed"
    assert r2.json()["finding"]["comment"] == "grew since 2024"
    assert r3.json()["finding"] is None and r3.json()["case"]["comment"] == "Follow-up CT in 3 months."
    assert list(ReviewRevision.objects.order_by("revision").values_list("revision", "action")) == [
        (1, "label"), (2, "comment"), (3, "comment")]
    case_rev = ReviewRevision.objects.get(revision=3)
    assert case_rev.before["comment"] == "" and case_rev.after["comment"] == "Follow-up CT in 3 months."
    assert {"review.finding.relabelled", "review.finding.commented", "review.case.commented"} <= set(
        AuditEvent.objects.values_list("action", flat=True))


def test_restore_puts_an_earlier_state_back_as_a_new_revision(radiologist_client, study, findings):
    original = case(radiologist_client, study)["findings"][0]
    act(radiologist_client, study, base_revision=0, action="edit", finding_id=findings[0].pk, centre_mm=[-95.0, -95.0, -40.0])

    response = act(radiologist_client, study, base_revision=1, action="restore", finding_id=findings[0].pk, state=original)

    f = response.json()["finding"]
    assert response.status_code == 200 and response.json()["revision"] == 2
    assert f == original
    assert list(ReviewRevision.objects.order_by("revision").values_list("action", flat=True)) == ["edit", "restore"]


def test_restore_refuses_a_state_the_finding_never_had(radiologist_client, study, findings):
    state = case(radiologist_client, study)["findings"][0]
    state["volume_ml"] = 99.0

    response = act(radiologist_client, study, base_revision=0, action="restore", finding_id=findings[0].pk, state=state)

    assert response.status_code == 400 and "not a state this finding has had" in response.json()["error"]
    assert Finding.objects.get(pk=findings[0].pk).volume_ml == 0.05 and not ReviewRevision.objects.exists()


# --- concurrency -----------------------------------------------------------------------------------


def test_a_stale_base_revision_is_a_409_that_names_who_changed_it_and_writes_nothing(client, cast, study, findings):
    client.force_login(cast.radiologist2)
    assert act(client, study, base_revision=0, action="accept", finding_id=findings[0].pk).status_code == 200
    client.force_login(cast.radiologist)
    audit_count = AuditEvent.objects.count()

    response = act(client, study, base_revision=0, action="reject", finding_id=findings[0].pk, reason="no")

    assert response.status_code == 409
    body = response.json()
    assert body["current_revision"] == 1
    assert body["error"].startswith("This case was changed by ravi-radiologist at ")
    assert body["error"].endswith("(revision 1); reload to see their changes.")
    assert Finding.objects.get(pk=findings[0].pk).status == "accepted"
    assert ReviewRevision.objects.count() == 1 and AuditEvent.objects.count() == audit_count


# --- sign-off --------------------------------------------------------------------------------------


def test_sign_off_is_refused_while_a_finding_is_proposed(radiologist_client, study, findings):
    act(radiologist_client, study, base_revision=0, action="accept", finding_id=findings[0].pk)

    response = act(radiologist_client, study, base_revision=1, action="signoff")

    assert response.status_code == 400 and response.json()["proposed"] == 1
    assert "1 finding(s) are still proposed" in response.json()["error"]
    assert Study.objects.get().review_status == "in_review" and ReviewRevision.objects.count() == 1


def test_candidates_below_the_operating_point_need_no_decision_and_teach_nothing(radiologist_client, study, findings, model):
    from webapp.training.dataset import read_labels

    candidate = ai_finding(study, model, diameter_mm=8.0, score=0.02, flagged=False, centre=(-90.0, -90.0, -40.0))
    act(radiologist_client, study, base_revision=0, action="accept", finding_id=findings[0].pk)
    act(radiologist_client, study, base_revision=1, action="reject", finding_id=findings[1].pk)

    response = act(radiologist_client, study, base_revision=2, action="signoff")

    assert response.status_code == 200, response.content
    assert Study.objects.get().review_status == "signed_off"
    candidate.refresh_from_db()
    assert candidate.status == "proposed"             # left as it was: neither a nodule nor a hard negative
    (labels,) = read_labels(study).series
    assert [les.diameter_mm for les in labels.lesions] == [6.0]
    assert labels.hard_negatives_xyz_mm == [findings[1].centre_xyz_mm]


def test_sign_off_then_changes_are_409_until_the_signer_reopens(client, cast, study, findings):
    client.force_login(cast.radiologist)
    act(client, study, base_revision=0, action="accept", finding_id=findings[0].pk)
    act(client, study, base_revision=1, action="reject", finding_id=findings[1].pk)

    signed = act(client, study, base_revision=2, action="signoff").json()

    assert signed["case"]["review_status"] == "signed_off" and signed["case"]["signed_off_by"] == "rita-radiologist"
    assert signed["case"]["signed_off_at"] and Study.objects.get().review_status == "signed_off"
    locked = act(client, study, base_revision=3, action="label", finding_id=findings[0].pk, label="solid")
    assert locked.status_code == 409 and "signed off by rita-radiologist" in locked.json()["error"]
    client.force_login(cast.radiologist2)
    assert act(client, study, base_revision=3, action="reopen").status_code == 403
    client.force_login(cast.radiologist)
    reopened = act(client, study, base_revision=3, action="reopen")
    assert reopened.status_code == 200 and reopened.json()["case"]["review_status"] == "in_review"
    assert reopened.json()["case"]["signed_off_by"] is None
    assert list(AuditEvent.objects.filter(action__startswith="review.case.").exclude(action="review.case.viewed")
                .order_by("id").values_list("action", flat=True)) == ["review.case.signed_off", "review.case.reopened"]


def test_an_admin_reopens_any_case_only_with_a_reason(client, cast, study):
    client.force_login(cast.radiologist)
    act(client, study, base_revision=0, action="signoff")  # no findings: a negative case
    client.force_login(cast.admin)

    refused = act(client, study, base_revision=1, action="reopen")
    assert refused.status_code == 400 and "only with a 'reason'" in refused.json()["error"]
    reopened = act(client, study, base_revision=1, action="reopen", reason="wrong patient merged; PACS ticket 4711")
    assert reopened.status_code == 200
    assert reopened.json()["case"]["notice"].startswith("Reopened by alice-admin on ")
    assert reopened.json()["case"]["notice"].endswith(": wrong patient merged; PACS ticket 4711")
    event = AuditEvent.objects.get(action="review.case.reopened")
    assert event.actor == cast.admin and event.details["reason"] == "wrong patient merged; PACS ticket 4711"


# --- assignment ------------------------------------------------------------------------------------


def test_assignment_rules(client, cast, study):
    client.force_login(cast.radiologist)
    took = act(client, study, base_revision=0, action="assign", username="rita-radiologist")
    assert took.status_code == 200 and took.json()["case"]["assignee"] == "rita-radiologist"
    client.force_login(cast.radiologist2)
    stolen = act(client, study, base_revision=1, action="assign", username="ravi-radiologist")
    assert stolen.status_code == 403
    client.force_login(cast.admin)
    moved = act(client, study, base_revision=1, action="assign", username="ravi-radiologist")
    assert moved.json()["case"]["assignee"] == "ravi-radiologist"
    assert act(client, study, base_revision=2, action="assign", username="oscar-outsider").status_code == 400
    freed = act(client, study, base_revision=2, action="assign", username=None)
    assert freed.json()["case"]["assignee"] is None
    assert AuditEvent.objects.filter(action="review.case.assigned").count() == 3


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    (b"{not json", "The request body is not valid JSON."),
    (b"[1, 2]", "The request body must be a JSON object."),
    (b"[" * 100000 + b"]" * 100000, "The request body is not valid JSON."),
    (b"\xff\xfe{", "The request body is not valid JSON."),
    (b'{"action": "explode", "base_revision": 0}', "'action' must be one of"),
    (b'{"action": "accept", "finding_id": 1}', "'base_revision' must be an integer"),
    (b'{"action": "accept", "base_revision": "0", "finding_id": 1}', "'base_revision' must be an integer"),
    (b'{"action": "accept", "base_revision": 0, "finding_id": "x"}', "'finding_id' must be an integer"),
    (b'{"action": "label", "base_revision": 0, "finding_id": 1, "label": "tumour"}', "'label' must be one of"),
    (b'{"action": "edit", "base_revision": 0, "finding_id": 1, "centre_mm": [1, 2]}', "'centre_mm' must be a list of three"),
    (b'{"action": "edit", "base_revision": 0, "finding_id": 1, "diameter_mm": -3}', "'diameter_mm' must be a number"),
    (b'{"action": "edit", "base_revision": 0, "finding_id": 1}', "'edit' needs at least one of"),
    (b'{"action": "mask", "base_revision": 0, "finding_id": 1}', "'mask' is required"),
    (b'{"action": "add", "base_revision": 0, "series_uid": "1.2", "centre_mm": [0, 0, 0], "diameter_mm": 5}', "is not a series of this study"),
    (b'{"action": "comment", "base_revision": 0, "text": 5}', "'text' must be a string"),
    (b'{"action": "assign", "base_revision": 0}', "'username' is required"),
    (b'{"action": "restore", "base_revision": 0, "finding_id": 1, "state": "x"}', "'state' must be a finding object"),
])
def test_bad_input_is_a_readable_400_and_changes_nothing(radiologist_client, study, findings, body, message):
    body = body.replace(b'"finding_id": 1', b'"finding_id": %d' % findings[0].pk)

    response = radiologist_client.post(f"{API}/studies/{study.study_uid}/actions/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    assert not ReviewRevision.objects.exists() and Study.objects.get().review_status == "unreviewed"


def test_a_point_outside_the_series_is_refused(radiologist_client, study, findings):
    response = act(radiologist_client, study, base_revision=0, action="edit", finding_id=findings[0].pk,
                   centre_mm=[0.0, 0.0, 500.0])

    assert response.status_code == 400 and "lies outside series" in response.json()["error"]


@pytest.mark.parametrize("mask, message", [
    ({"origin_zyx": [0, 0, 0], "shape_zyx": [2, 2, 2], "bits_b64": "AAAA"}, "holds 3 bytes; a 2x2x2 box needs 1"),
    ({"origin_zyx": [5, 0, 0], "shape_zyx": [2, 2, 2], "bits_b64": "/w=="}, "lies outside the series grid [6, 16, 16]"),
    ({"origin_zyx": [-1, 0, 0], "shape_zyx": [1, 1, 1], "bits_b64": "gA=="}, "lies outside the series grid"),
    ({"origin_zyx": [0, 0, 0], "shape_zyx": [0, 1, 1], "bits_b64": ""}, "must be positive"),
    ({"origin_zyx": [0, 0], "shape_zyx": [1, 1, 1], "bits_b64": "gA=="}, "origin_zyx must be a list of three integers"),
    ({"origin_zyx": [0, 0, 0], "shape_zyx": [1, 1, 1], "bits_b64": "not base64!"}, "not valid base64"),
    ({"origin_zyx": [0, 0, 0], "shape_zyx": [1, 1, 1], "bits_b64": "AA=="}, "the mask is empty"),
    ({"origin_zyx": [0, 0, 0], "shape_zyx": [1, 1, 1]}, "bits_b64 must be a base64 string"),
    ("bits", "mask must be an object"),
])
def test_bad_masks_are_refused(radiologist_client, study, findings, mask, message):
    response = act(radiologist_client, study, base_revision=0, action="mask", finding_id=findings[0].pk, mask=mask)

    assert response.status_code == 400 and message in response.json()["error"]
    assert Finding.objects.get(pk=findings[0].pk).mask_origin_zyx == [1, 5, 5]


def test_a_finding_of_another_study_or_an_unknown_one_is_404(radiologist_client, cast, study, findings, model):
    from .conftest import ingest

    other = ingest(cast, study="other", series="other-series", patient_id="P-2")
    foreign = ai_finding(other, model)

    for finding_id in (foreign.pk, 987654):
        response = act(radiologist_client, study, base_revision=0, action="accept", finding_id=finding_id)
        assert response.status_code == 404 and response.json()["error"] == f"Finding {finding_id} is not a finding of this study."
    assert Finding.objects.get(pk=foreign.pk).status == "proposed"


def test_wrong_method_is_405_json(radiologist_client, study):
    assert radiologist_client.get(f"{API}/studies/{study.study_uid}/actions/").status_code == 405
    assert radiologist_client.post(f"{API}/studies/{study.study_uid}/").json()["error"] == "Use GET here."


def test_revisions_are_append_only(radiologist_client, study, findings):
    act(radiologist_client, study, base_revision=0, action="accept", finding_id=findings[0].pk)
    rev = ReviewRevision.objects.get()

    with pytest.raises(PermissionError):
        rev.save()
    with pytest.raises(PermissionError):
        ReviewRevision.objects.all().delete()


def test_a_new_ai_run_keeps_findings_a_radiologist_touched(radiologist_client, study, findings, model):
    """Re-running the model replaces untouched proposals only: a relabelled proposal stays."""

    from webapp.modelops.models import InferenceRun
    from webapp.review.services import replace_ai_findings

    act(radiologist_client, study, base_revision=0, action="label", finding_id=findings[0].pk, label="calcified")
    run = InferenceRun.objects.create(series=study.series.get(), model_version=model, state="done")

    replace_ai_findings(run, [])

    assert list(Finding.objects.values_list("pk", flat=True)) == [findings[0].pk]


def test_a_change_waits_for_a_concurrent_one_and_then_gets_409(transactional_db, cast, study, findings):
    """Real concurrency, two database connections: while the first change's transaction is still open,
    the second (same base revision) waits on the case row, then sees revision 1 and writes nothing."""
    import threading
    import time

    from django.db import connection, transaction

    from webapp.review import services
    from webapp.review.payloads import Conflict

    services.get_case(study)  # the case row exists already: only the row lock can serialise the two
    first_holds_lock, outcomes = threading.Event(), {}

    def first():
        try:
            with transaction.atomic():
                services.accept_finding(study, cast.radiologist, base_revision=0, finding_id=findings[0].pk)
                first_holds_lock.set()
                time.sleep(0.5)  # still uncommitted
            outcomes["first"] = "ok"
        finally:
            connection.close()

    def second():
        first_holds_lock.wait(10)
        try:
            services.reject_finding(study, cast.radiologist2, base_revision=0, finding_id=findings[0].pk)
            outcomes["second"] = "ok"
        except Conflict as exc:
            outcomes["second"] = exc.message
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert outcomes["first"] == "ok"
    assert outcomes["second"].startswith("This case was changed by rita-radiologist")
    assert ReviewRevision.objects.count() == 1 and Finding.objects.get(pk=findings[0].pk).status == "accepted"
