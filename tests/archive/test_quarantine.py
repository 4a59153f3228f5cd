"""A signed-off read cannot change under the reader: late instances go to a quarantine that admins
decide on, and every instance's patient identity is compared with its study's."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.factories import ct_slice, to_bytes, uid
from webapp.accounts.models import ApiToken, AuditEvent
from webapp.archive import quarantine
from webapp.archive import services as archive
from webapp.archive.models import Instance, QuarantinedInstance, Study
from webapp.review import services as review
from webapp.review.models import ReviewRevision

pytestmark = pytest.mark.django_db
BOUNDARY = "RadLoopQuarantineBoundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
STORED_PATIENT = {"patient_id": "PAT-7731", "patient_name": "Lindqvist^Margarethe"}


def multipart(*parts: bytes) -> bytes:
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{BOUNDARY}--\r\n".encode()


def slice_bytes(index: int, **kw) -> bytes:
    return to_bytes(ct_slice(index=index, **{**STORED_PATIENT, **kw}))


@pytest.fixture
def sent_jobs(monkeypatch):
    """Tasks sent to the broker, recorded instead of sent (no worker runs in these tests)."""
    sent = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: sent.append((name, a)))
    return sent


@pytest.fixture
def signed_off(cast, sent_jobs) -> Study:
    """A 4-slice study, assigned to and signed off by rita-radiologist (no findings: a negative read)."""
    batch = archive.start_batch(cast.admin)
    for i in range(1, 5):
        archive.ingest_stream(batch, f"{i}.dcm", io.BytesIO(slice_bytes(i)))
    study = Study.objects.get()
    review.assign_case(study, cast.radiologist, base_revision=0, username=cast.radiologist.username)
    review.sign_off_case(study, cast.radiologist, base_revision=1)
    study.refresh_from_db()
    assert study.review_status == "signed_off"
    return study


def upload(client, *files: tuple[str, bytes]):
    batch = client.post(reverse("archive:upload_batch_create")).json()["batch"]
    response = client.post(reverse("archive:upload_batch_files", args=[batch]),
                           {"files": [SimpleUploadedFile(name, data) for name, data in files]})
    return batch, response


def stow(client, user, *parts: bytes, study_uid: str | None = None):
    key = ApiToken.issue(user, "pacs")[1]
    url = f"/dicomweb/studies/{study_uid}" if study_uid else "/dicomweb/studies"
    return client.post(url, multipart(*parts), content_type=STOW_TYPE, HTTP_AUTHORIZATION=f"Bearer {key}")


def archived_files(archive_dir: Path) -> list[Path]:
    return [p for p in archive_dir.rglob("*.dcm") if ".incoming" not in p.parts]


def late_sop() -> str:
    return str(ct_slice(index=0).SOPInstanceUID)


# --- quarantine ------------------------------------------------------------------------------------


def test_an_upload_for_a_signed_off_study_is_quarantined_and_never_served(client, cast, signed_off, archive_dir):
    client.force_login(cast.admin)
    batch, response = upload(client, ("late.dcm", slice_bytes(0)))

    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["outcome"] == "quarantined"
    assert result["reason"].startswith("quarantined: the study was signed off")
    # no Instance row, no file in the archive; the file is kept in the quarantine folder
    assert not Instance.objects.filter(sop_uid=late_sop()).exists() and Instance.objects.count() == 4
    assert len(archived_files(archive_dir)) == 4
    held = QuarantinedInstance.objects.get()
    assert held.state == "held" and held.source == "browser" and held.received_from == cast.admin
    assert held.batch_id == batch and held.sop_uid == late_sop() and held.study == signed_off
    kept = quarantine.quarantine_root() / held.file_path
    assert kept.read_bytes() == slice_bytes(0)
    assert archive_dir not in kept.parents
    assert Study.objects.get().review_status == "signed_off"
    assert AuditEvent.objects.filter(action="archive.quarantine.held", object_id=str(held.pk)).exists()
    # a viewer cannot reach it
    client.force_login(cast.radiologist)
    url = f"/dicomweb/studies/{signed_off.study_uid}/series/{uid('series-1')}/instances/{late_sop()}"
    assert client.get(url).status_code == 404


def test_a_zip_for_a_signed_off_study_is_quarantined_too(client, cast, signed_off):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("late/0.dcm", slice_bytes(0))
        zf.writestr("late/5.dcm", slice_bytes(5))
    client.force_login(cast.admin)
    _, response = upload(client, ("late.zip", buf.getvalue()))

    assert [r["outcome"] for r in response.json()["results"]] == ["quarantined", "quarantined"]
    assert QuarantinedInstance.objects.filter(state="held").count() == 2 and Instance.objects.count() == 4


def test_an_upload_of_a_held_and_a_refused_file_is_not_called_all_refused(client, cast, signed_off):
    client.force_login(cast.admin)
    _, response = upload(client, ("late.dcm", slice_bytes(0)), ("notes.dcm", b"not a DICOM file at all"))

    assert response.status_code == 200
    assert [r["outcome"] for r in response.json()["results"]] == ["quarantined", "rejected"]


def test_stow_to_a_signed_off_study_answers_202_with_the_reason_and_stores_nothing(client, cast, signed_off, archive_dir):
    response = stow(client, cast.admin, slice_bytes(0), study_uid=signed_off.study_uid)

    assert response.status_code == 202
    (item,) = response.json()["00081199"]["Value"]
    assert item["00081155"]["Value"] == [late_sop()]
    assert "00081190" not in item  # no RetrieveURL: it cannot be retrieved
    assert item["00000902"]["Value"][0].startswith("quarantined: study signed off")
    held = QuarantinedInstance.objects.get()
    assert held.source == "stow" and held.received_from == cast.admin
    assert not Instance.objects.filter(sop_uid=late_sop()).exists() and len(archived_files(archive_dir)) == 4


def test_the_same_file_sent_twice_is_held_once(client, cast, signed_off):
    stow(client, cast.admin, slice_bytes(0))
    again = stow(client, cast.admin, slice_bytes(0))

    assert again.status_code == 202
    assert QuarantinedInstance.objects.count() == 1
    assert len(list(quarantine.quarantine_root().rglob("*.dcm"))) == 1


def test_admins_see_the_quarantine_and_others_do_not(client, cast, signed_off):
    stow(client, cast.admin, slice_bytes(0))
    client.force_login(cast.admin)

    page = client.get(reverse("archive:quarantine"))

    assert page.status_code == 200
    html = page.content.decode()
    assert late_sop() in html and signed_off.study_uid in html and "stow" in html and "alice-admin" in html
    assert "was signed off" in html
    for user in (cast.radiologist, cast.outsider):
        client.force_login(user)
        assert client.get(reverse("archive:quarantine")).status_code == 403
        assert client.post(reverse("archive:quarantine_release", args=[QuarantinedInstance.objects.get().pk])).status_code == 403
    assert QuarantinedInstance.objects.get().state == "held"


def test_release_merges_the_instance_reopens_the_case_audits_and_tells_the_assignee(client, cast, signed_off, archive_dir,
                                                                                  sent_jobs, django_capture_on_commit_callbacks):
    stow(client, cast.admin, slice_bytes(0))
    held = QuarantinedInstance.objects.get()
    client.force_login(cast.admin)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("archive:quarantine_release", args=[held.pk]), follow=True)

    assert response.status_code == 200 and "Released into the study" in response.content.decode()
    instance = Instance.objects.get(sop_uid=late_sop())
    assert (archive_dir / instance.file_path).read_bytes() == slice_bytes(0)
    assert ("workers.prepare_series", (instance.series_id,)) in sent_jobs  # geometry and AI follow the new slice
    held.refresh_from_db()
    assert held.state == "released" and held.decided_by == cast.admin
    study = Study.objects.get()
    assert study.review_status == "in_review"
    assert ReviewRevision.objects.get(study=study, action="reopen").user == cast.admin
    event = AuditEvent.objects.get(action="review.case.reopened")
    assert event.actor == cast.admin and f"quarantined instance {held.pk} released" in event.details["reason"]
    assert AuditEvent.objects.filter(action="archive.quarantine.released", object_id=str(held.pk)).exists()
    # the assignee sees why the case is open again, on the case and in the worklist
    client.force_login(cast.radiologist)
    data = client.get(f"/api/review/studies/{study.study_uid}/").json()
    assert data["case"]["assignee"] == "rita-radiologist"
    assert "added an image that arrived after sign-off" in data["case"]["notice"]
    assert "added an image that arrived after sign-off" in client.get(reverse("archive:study_list")).content.decode()
    # signing off again clears the notice
    review.sign_off_case(study, cast.radiologist, base_revision=data["case"]["revision"])
    assert client.get(f"/api/review/studies/{study.study_uid}/").json()["case"]["notice"] == ""


def test_release_and_discard_remove_the_quarantined_file(client, cast, signed_off, django_capture_on_commit_callbacks):
    stow(client, cast.admin, slice_bytes(0))
    stow(client, cast.admin, slice_bytes(5))
    first, second = QuarantinedInstance.objects.order_by("pk")
    paths = [quarantine.quarantine_root() / q.file_path for q in (first, second)]
    client.force_login(cast.admin)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("archive:quarantine_discard", args=[second.pk]), {"note": "test image from the modality"})
    assert not paths[1].exists() and paths[0].exists()
    second.refresh_from_db()
    assert second.state == "discarded" and second.decision_note == "test image from the modality"
    assert not Instance.objects.filter(sop_uid=second.sop_uid).exists()
    assert Study.objects.get().review_status == "signed_off"  # discarding changes nothing in the read
    assert AuditEvent.objects.filter(action="archive.quarantine.discarded", object_id=str(second.pk)).exists()

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("archive:quarantine_release", args=[first.pk]))
    assert not paths[0].exists() and Instance.objects.filter(sop_uid=first.sop_uid).exists()
    # a decided entry cannot be decided again
    again = client.post(reverse("archive:quarantine_release", args=[second.pk]), follow=True)
    assert "already discarded" in again.content.decode()
    assert not Instance.objects.filter(sop_uid=second.sop_uid).exists()


def test_an_open_case_takes_new_instances_as_before(client, cast):
    batch = archive.start_batch(cast.admin)
    archive.ingest_stream(batch, "1.dcm", io.BytesIO(slice_bytes(1)))
    outcome = archive.ingest_stream(batch, "2.dcm", io.BytesIO(slice_bytes(2)))

    assert outcome.outcome == "stored" and not QuarantinedInstance.objects.exists()


# --- patient identity ------------------------------------------------------------------------------


MISMATCHES = [
    ({"patient_id": "PAT-9999"}, "PatientID"),
    ({"patient_id": "pat-7731"}, "PatientID"),  # IDs are codes: case matters
    ({"patient_id": ""}, "PatientID"),
    ({"patient_name": "Lindqvist^Greta"}, "PatientName"),
    ({"patient_name": "Lindqvis^Margarethe"}, "PatientName"),
]


def with_identity(ds, *, birth_date=None, sex=None):
    if birth_date is not None:
        ds.PatientBirthDate = birth_date
    if sex is not None:
        ds.PatientSex = sex
    return to_bytes(ds)


@pytest.mark.parametrize("change, field", MISMATCHES)
def test_an_upload_for_another_patient_is_refused_without_naming_the_stored_one(client, cast, change, field):
    batch = archive.start_batch(cast.admin)
    archive.ingest_stream(batch, "1.dcm", io.BytesIO(slice_bytes(1)))
    client.force_login(cast.admin)

    _, response = upload(client, ("other.dcm", slice_bytes(2, **change)))

    body = response.content.decode()
    (result,) = response.json()["results"]
    assert result["outcome"] == "rejected" and field in result["reason"]
    assert "does not match the patient" in result["reason"]
    for stored_value in ("PAT-7731", "Lindqvist", "Margarethe", "19600101"):
        assert stored_value not in body
    assert Instance.objects.count() == 1
    event = AuditEvent.objects.get(action="archive.instance.identity_mismatch")
    assert event.details["fields"] == [field] and event.object_id == uid("study-1")
    assert event.details["sop_uid"] == str(ct_slice(index=2).SOPInstanceUID)
    assert "Lindqvist" not in json.dumps(event.details) and "PAT-7731" not in json.dumps(event.details)


@pytest.mark.parametrize("birth_date, sex, field", [("19610101", None, "PatientBirthDate"), (None, "M", "PatientSex")])
def test_birth_date_and_sex_are_compared_too(cast, birth_date, sex, field):
    batch = archive.start_batch(cast.admin)
    archive.ingest_stream(batch, "1.dcm", io.BytesIO(slice_bytes(1)))
    other = with_identity(ct_slice(index=2, **STORED_PATIENT), birth_date=birth_date, sex=sex)

    outcome = archive.ingest_stream(batch, "2.dcm", io.BytesIO(other))

    assert outcome.outcome == "rejected" and field in outcome.reason and "19600101" not in outcome.reason
    assert Instance.objects.count() == 1


def test_stow_of_another_patient_is_refused_without_naming_the_stored_one(client, cast):
    stow(client, cast.admin, slice_bytes(1))

    response = stow(client, cast.admin, slice_bytes(2, patient_id="PAT-0001", patient_name="Other^Person"))

    assert response.status_code == 409
    text = response.content.decode()
    assert "PatientID" in text and "PAT-7731" not in text and "Lindqvist" not in text
    assert Instance.objects.count() == 1


@pytest.mark.parametrize("name, patient_id, birth_date, sex", [
    ("LINDQVIST^MARGARETHE", "PAT-7731", None, None),           # case
    ("Lindqvist^Margarethe^^^", "PAT-7731", None, None),        # trailing empty components
    ("Lindqvist ^ Margarethe", "PAT-7731 ", None, None),        # spaces around components and the ID
    ("Lindqvist^Margarethe=リンドクヴィスト", "PAT-7731", None, None),  # other representations ignored
    ("Lindqvist^Margarethe", "PAT-7731", "", ""),              # missing birth date and sex: not a conflict
])
def test_the_same_patient_written_differently_is_accepted(cast, name, patient_id, birth_date, sex):
    batch = archive.start_batch(cast.admin)
    archive.ingest_stream(batch, "1.dcm", io.BytesIO(slice_bytes(1)))
    ds = ct_slice(index=2, patient_id=patient_id, patient_name=name)
    outcome = archive.ingest_stream(batch, "2.dcm", io.BytesIO(with_identity(ds, birth_date=birth_date, sex=sex)))

    assert outcome.outcome == "stored", outcome.reason


def test_a_quarantined_file_of_another_patient_is_refused_not_held(client, cast, signed_off):
    response = stow(client, cast.admin, slice_bytes(0, patient_id="PAT-0001"))

    assert response.status_code == 409 and "PAT-7731" not in response.content.decode()
    assert not QuarantinedInstance.objects.exists()
