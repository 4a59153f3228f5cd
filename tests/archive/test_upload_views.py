"""Upload through the HTTP stack: roles, per-file outcomes, batches, audit."""
from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.factories import series_bytes
from webapp.accounts.models import AuditEvent
from webapp.archive.models import Instance, Study

pytestmark = pytest.mark.django_db


def files(*blobs: tuple[str, bytes]):
    return [SimpleUploadedFile(name, data, content_type="application/dicom") for name, data in blobs]


def start(client) -> int:
    response = client.post(reverse("archive:upload_batch_create"))
    assert response.status_code == 201
    return response.json()["batch"]


def test_anonymous_users_are_sent_to_the_login_page(client):
    for url in (reverse("archive:upload"), reverse("archive:study_list"), reverse("archive:upload_batch_create")):
        response = client.get(url) if url != reverse("archive:upload_batch_create") else client.post(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_rejects_upload_by_radiologist(radiologist_client):
    assert radiologist_client.get(reverse("archive:upload")).status_code == 403
    assert radiologist_client.post(reverse("archive:upload_batch_create")).status_code == 403
    assert Study.objects.count() == 0


def test_an_admin_uploads_a_series_and_sees_each_outcome(admin_client, cast, django_capture_on_commit_callbacks, monkeypatch):
    queued = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: queued.append((name, a)))
    batch = start(admin_client)
    slices = series_bytes(3)
    url = reverse("archive:upload_batch_files", args=[batch])

    response = admin_client.post(url, {
        "files": files(("a.dcm", slices[0]), ("b.dcm", slices[1]), ("c.txt", b"not dicom")),
        "paths": ["scan/a.dcm", "scan/b.dcm", "scan/c.txt"],
    })
    again = admin_client.post(url, {"files": files(("a.dcm", slices[0]), ("d.dcm", slices[2]))})
    with django_capture_on_commit_callbacks(execute=True):
        finish = admin_client.post(reverse("archive:upload_batch_finish", args=[batch]))

    assert response.status_code == 200
    results = [(r["name"], r["outcome"]) for r in response.json()["results"]]
    assert results == [("scan/a.dcm", "stored"), ("scan/b.dcm", "stored"), ("scan/c.txt", "rejected")]
    assert "not a DICOM file" in response.json()["results"][2]["reason"]
    assert [r["outcome"] for r in again.json()["results"]] == ["duplicate", "stored"]
    summary = finish.json()
    assert summary["counts"] == {"stored": 3, "duplicate": 1, "rejected": 1, "skipped": 0, "quarantined": 0}
    assert summary["studies"] == [{
        "study_uid": Study.objects.get().study_uid, "patient": "Doe, Jane", "patient_id": "PAT-1",
        "study_date": "2026-01-02", "description": "CT CHEST",
    }]
    assert queued == [("workers.prepare_series", (Study.objects.get().series.get().pk,))]
    assert Instance.objects.count() == 3
    assert AuditEvent.objects.filter(action="archive.upload.finished", actor=cast.admin).count() == 1


def test_a_zip_goes_through_the_same_path(admin_client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, data in enumerate(series_bytes(2)):
            zf.writestr(f"dir/IM{i}", data)
    batch = start(admin_client)

    response = admin_client.post(
        reverse("archive:upload_batch_files", args=[batch]), {"files": files(("study.zip", buf.getvalue()))}
    )

    assert [r["outcome"] for r in response.json()["results"]] == ["stored", "stored"]


def test_bad_requests_get_a_clear_4xx(admin_client):
    batch = start(admin_client)
    url = reverse("archive:upload_batch_files", args=[batch])

    empty = admin_client.post(url, {})
    admin_client.post(reverse("archive:upload_batch_finish", args=[batch]))
    closed = admin_client.post(url, {"files": files(("a.dcm", series_bytes(1)[0]))})
    unknown = admin_client.post(reverse("archive:upload_batch_files", args=[99999]), {})
    wrong_method = admin_client.get(url)

    assert empty.status_code == 400 and "No files" in empty.json()["error"]
    assert closed.status_code == 409 and "already finished" in closed.json()["error"]
    assert unknown.status_code == 404
    assert wrong_method.status_code == 405
    assert Instance.objects.count() == 0


def test_the_upload_report_page_lists_outcomes(admin_client):
    batch = start(admin_client)
    admin_client.post(reverse("archive:upload_batch_files", args=[batch]), {"files": files(("junk.bin", b"x" * 10))})

    page = admin_client.get(reverse("archive:upload_batch_detail", args=[batch]))

    assert page.status_code == 200
    assert b"junk.bin" in page.content and b"not a DICOM file" in page.content


def test_the_upload_page_offers_files_folders_and_zips(admin_client):
    page = admin_client.get(reverse("archive:upload"))

    assert page.status_code == 200
    assert b"webkitdirectory" in page.content and b"Drop files, folders or zips here" in page.content


def test_folder_metadata_files_are_skipped_not_rejected(admin_client):
    batch = start(admin_client)

    response = admin_client.post(
        reverse("archive:upload_batch_files", args=[batch]),
        {"files": files((".DS_Store", b"\0\0\0\1Bud1"), ("DICOMDIR", b"index"), ("IM1", series_bytes(1)[0])),
         "paths": ["scan/.DS_Store", "scan/DICOMDIR", "scan/IM1"]},
    )

    assert [(r["name"], r["outcome"]) for r in response.json()["results"]] == [
        ("scan/.DS_Store", "skipped"), ("scan/DICOMDIR", "skipped"), ("scan/IM1", "stored")]
