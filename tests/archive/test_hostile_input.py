"""Every door refuses hostile DICOM: each case goes through the browser upload and through STOW-RS
and must come back refused with its reason, leaving no row, no file and no job, with the server
still storing a valid file afterwards. The files are made by tests/archive/hostile_files.py."""
from __future__ import annotations

import pydicom
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.archive.hostile_files import DICOM_CASES, ZIP_CASES, base, jpeg, encapsulated_file, raw_with, rle_frames
from tests.factories import ct_slice, to_bytes
from webapp.accounts.models import ApiToken, Role
from webapp.accounts.services import ensure_user
from webapp.archive.models import Instance, Series, Study, UploadBatch

pytestmark = pytest.mark.django_db
BOUNDARY = "HostileBoundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(*parts: bytes) -> bytes:
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{BOUNDARY}--\r\n".encode()


def valid_file(name: str = "after") -> bytes:
    return to_bytes(ct_slice(study=f"valid-{name}", series=f"valid-{name}-ct", rows=16, columns=16))


def stored_files(archive_dir) -> list:
    return [p for p in archive_dir.rglob("*") if p.is_file()] if archive_dir.exists() else []


def assert_nothing_stored(archive_dir):
    assert (Instance.objects.count(), Series.objects.count(), Study.objects.count()) == (0, 0, 0)
    assert stored_files(archive_dir) == []


def upload(client, name: str, data: bytes):
    batch = client.post(reverse("archive:upload_batch_create")).json()["batch"]
    response = client.post(reverse("archive:upload_batch_files", args=[batch]),
                           {"files": [SimpleUploadedFile(name, data)]})
    return batch, response


@pytest.fixture
def stow_headers(cast):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(cast.admin, 'hostile')[1]}"}


def stow(client, headers, *parts: bytes):
    return client.post("/dicomweb/studies", multipart(*parts), content_type=STOW_TYPE, **headers)


def failure_comments(response) -> list[str]:
    failed = response.json()["00081198"]["Value"]
    assert all(item["00081197"]["Value"][0] for item in failed)  # a FailureReason code on each
    return [item["00000902"]["Value"][0] for item in failed]


@pytest.mark.parametrize("case", DICOM_CASES + ZIP_CASES, ids=[c[0] for c in DICOM_CASES + ZIP_CASES])
def test_the_upload_door_refuses_it_with_the_reason_and_keeps_nothing(
        admin_client, archive_dir, django_capture_on_commit_callbacks, case):
    name, build, reason = case
    suffix = ".zip" if case in ZIP_CASES else ".dcm"

    with django_capture_on_commit_callbacks() as queued:
        batch, response = upload(admin_client, f"hostile{suffix}", build())
        finish = admin_client.post(reverse("archive:upload_batch_finish", args=[batch]))

    assert response.status_code == 422, response.content[:300]
    results = response.json()["results"]
    assert [r["outcome"] for r in results if r["outcome"] != "skipped"] == ["rejected"]
    assert any(reason in r["reason"] for r in results), results
    assert finish.json()["series_ids"] == [] and queued == []  # no job for anything
    assert_nothing_stored(archive_dir)
    _, after = upload(admin_client, "valid.dcm", valid_file())
    assert after.status_code == 200 and after.json()["results"][0]["outcome"] == "stored"


@pytest.mark.parametrize("case", DICOM_CASES, ids=[c[0] for c in DICOM_CASES])
def test_the_stow_door_refuses_it_with_the_reason_and_keeps_nothing(
        client, stow_headers, archive_dir, django_capture_on_commit_callbacks, case):
    name, build, reason = case

    with django_capture_on_commit_callbacks() as queued:
        response = stow(client, stow_headers, build())

    assert response.status_code == 409, response.content[:300]
    (comment,) = failure_comments(response)
    assert reason in comment  # within the 64 characters an ErrorComment holds
    assert "00081199" not in response.json()
    assert queued == []
    assert_nothing_stored(archive_dir)
    after = stow(client, stow_headers, valid_file())
    assert after.status_code == 200 and "00081199" in after.json()


def test_a_mixed_upload_stays_200_with_each_files_outcome(admin_client):
    _, response = upload(admin_client, "good.dcm", valid_file("mixed"))
    batch = response.json()
    assert response.status_code == 200
    batch_id = UploadBatch.objects.get().pk
    mixed = admin_client.post(reverse("archive:upload_batch_files", args=[batch_id]), {"files": [
        SimpleUploadedFile("good.dcm", valid_file("mixed2")),
        SimpleUploadedFile("bad.dcm", DICOM_CASES[1][1]()),
    ]})
    assert batch["results"][0]["outcome"] == "stored"
    assert mixed.status_code == 200
    assert [r["outcome"] for r in mixed.json()["results"]] == ["stored", "rejected"]


def test_a_request_of_metadata_files_only_is_not_an_error(admin_client):
    _, response = upload(admin_client, ".DS_Store", b"junk")

    assert response.status_code == 200 and response.json()["results"][0]["outcome"] == "skipped"


# --- what is accepted is stored servable ----------------------------------------------------------


def test_the_stored_preamble_is_zeroed_and_a_resend_is_still_a_duplicate(admin_client, archive_dir):
    ds = ct_slice(study="polyglot", series="polyglot-ct", rows=16, columns=16)
    ds.preamble = b"MZ\x90\x00" + b"\x41" * 124  # a PE header in the preamble (CVE-2019-11687)
    data = to_bytes(ds)

    _, first = upload(admin_client, "a.dcm", data)
    _, again = upload(admin_client, "a.dcm", data)

    assert [first.json()["results"][0]["outcome"], again.json()["results"][0]["outcome"]] == ["stored", "duplicate"]
    (path,) = stored_files(archive_dir)
    assert path.read_bytes()[:132] == bytes(128) + b"DICM"
    assert path.read_bytes()[132:] == data[132:]


def test_a_valid_deflated_file_is_stored_inflated_and_served(admin_client, archive_dir, stow_headers, client):
    ds = base()
    original_pixels = ds.PixelData
    data = raw_with(ds, pydicom.uid.DeflatedExplicitVRLittleEndian)

    _, response = upload(admin_client, "deflated.dcm", data)
    _, again = upload(admin_client, "deflated.dcm", data)

    assert response.json()["results"][0]["outcome"] == "stored"
    assert again.json()["results"][0]["outcome"] == "duplicate"
    instance = Instance.objects.get()
    assert instance.transfer_syntax_uid == pydicom.uid.ExplicitVRLittleEndian
    stored = pydicom.dcmread(archive_dir / instance.file_path)
    assert stored.PixelData == original_pixels and stored.PatientName == "Doe^Jane"
    frame = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                       f"{ds.SOPInstanceUID}/frames/1", HTTP_ACCEPT="multipart/related; type=\"application/octet-stream\"",
                       **stow_headers)
    content = b"".join(frame.streaming_content) if frame.streaming else frame.content
    assert frame.status_code == 200 and original_pixels in content


@pytest.mark.parametrize("kind", ["RLE, 3 frames", "JPEG baseline", "single-frame RLE with one pad byte"])
def test_valid_encapsulated_files_still_pass(admin_client, kind):
    if kind == "RLE, 3 frames":
        data = encapsulated_file(rle_frames(3), pydicom.uid.RLELossless)
    elif kind == "JPEG baseline":
        data = encapsulated_file([jpeg(16), jpeg(16)], pydicom.uid.JPEGBaseline8Bit, BitsAllocated=8, BitsStored=8,
                                 HighBit=7, PixelRepresentation=0)
    else:
        data = encapsulated_file(rle_frames(1), pydicom.uid.RLELossless, bot=False)

    _, response = upload(admin_client, "ok.dcm", data)

    assert response.status_code == 200, response.content[:300]
    assert response.json()["results"][0]["outcome"] == "stored"


# --- batches belong to their creator ---------------------------------------------------------------


def test_another_uploader_gets_404_for_someone_elses_batch(client, cast):
    owner, _ = ensure_user("ursula-uploader", "unused-password-123", Role.UPLOADER)
    other, _ = ensure_user("ulrich-uploader", "unused-password-123", Role.UPLOADER)
    client.force_login(owner)
    batch = client.post(reverse("archive:upload_batch_create")).json()["batch"]
    client.post(reverse("archive:upload_batch_files", args=[batch]),
                {"files": [SimpleUploadedFile("a.dcm", valid_file("owned"))]})

    client.force_login(other)
    pages = [
        client.get(reverse("archive:upload_batch_detail", args=[batch])),
        client.post(reverse("archive:upload_batch_files", args=[batch]),
                    {"files": [SimpleUploadedFile("b.dcm", valid_file("intruder"))]}),
        client.post(reverse("archive:upload_batch_finish", args=[batch])),
    ]
    client.force_login(cast.admin)
    admin_view = client.get(reverse("archive:upload_batch_detail", args=[batch]))

    assert [p.status_code for p in pages] == [404, 404, 404]
    assert UploadBatch.objects.get(pk=batch).state == UploadBatch.State.OPEN
    assert Instance.objects.count() == 1
    assert admin_view.status_code == 200 and b"a.dcm" in admin_view.content


def test_stow_of_many_parts_reports_each(client, stow_headers):
    parts = [to_bytes(ct_slice(study="many", series="many-ct", index=i, rows=8, columns=8)) for i in range(50)]
    parts[7] = DICOM_CASES[0][1]()

    response = stow(client, stow_headers, *parts)

    assert response.status_code == 202
    assert len(response.json()["00081199"]["Value"]) == 49
    (comment,) = failure_comments(response)
    assert "pixel data too short" in comment
