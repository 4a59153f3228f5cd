"""Zip uploads: path tricks refused, bombs refused before extraction, junk skipped with a reason."""
from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import series_bytes
from webapp.archive import services
from webapp.archive.models import Instance, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(cast):
    return services.start_batch(cast.admin)


def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> SimpleUploadedFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
    return SimpleUploadedFile("study.zip", buf.getvalue(), content_type="application/zip")


def outcomes_by_name(outcomes):
    return {o.name.split("study.zip/", 1)[-1]: (o.outcome, o.reason) for o in outcomes}


def test_it_stores_every_dicom_file_in_a_zip_with_folders(batch):
    slices = series_bytes(3)
    upload = make_zip({f"CT/series1/IM{i}": data for i, data in enumerate(slices)})

    outcomes = services.ingest_upload(batch, upload)

    assert [o.outcome for o in outcomes] == ["stored"] * 3
    assert outcomes[0].name == "study.zip/CT/series1/IM0"
    assert Instance.objects.count() == 3


def test_it_refuses_path_traversal_and_absolute_paths_and_stores_the_rest(batch, archive_dir):
    good, evil1, evil2 = series_bytes(3)
    upload = make_zip({"ok/IM0": good, "../../escape.dcm": evil1, "/etc/abs.dcm": evil2})

    result = outcomes_by_name(services.ingest_upload(batch, upload))

    assert result["ok/IM0"][0] == "stored"
    assert result["../../escape.dcm"] == ("rejected", "refused: '..' in a path inside the zip")
    assert result["/etc/abs.dcm"] == ("rejected", "refused: absolute path inside the zip")
    assert Instance.objects.count() == 1
    assert not (archive_dir.parent.parent / "escape.dcm").exists()


def test_it_skips_junk_with_a_reason(batch):
    (good,) = series_bytes(1)
    upload = make_zip({
        "IM0": good,
        "__MACOSX/._IM0": b"mac resource fork",
        "folder/.DS_Store": b"x",
        "DICOMDIR": b"index",
        "nested.zip": b"PK\x03\x04...",
        "notes.txt": b"the patient was nervous",
    })

    result = outcomes_by_name(services.ingest_upload(batch, upload))

    assert result["IM0"][0] == "stored"
    assert result["__MACOSX/._IM0"][0] == "skipped" and "metadata" in result["__MACOSX/._IM0"][1]
    assert result["folder/.DS_Store"][0] == "skipped"
    assert result["DICOMDIR"] == ("skipped", "skipped: DICOMDIR is an index of the other files, not an image")
    assert result["nested.zip"][0] == "skipped" and "archives inside a zip" in result["nested.zip"][1]
    assert result["notes.txt"][0] == "rejected" and "not a DICOM file" in result["notes.txt"][1]


def test_it_refuses_a_zip_bomb_before_extracting_anything(batch, archive_dir):
    (good,) = series_bytes(1)
    upload = make_zip({"IM0": good, "zeros.dcm": b"\0" * (50 * 1024 * 1024)})

    outcomes = services.ingest_upload(batch, upload)

    assert len(outcomes) == 1 and outcomes[0].outcome == "rejected"
    assert "compression ratio" in outcomes[0].reason and "zip bomb" in outcomes[0].reason
    assert Instance.objects.count() == 0 and Study.objects.count() == 0


def test_it_refuses_a_zip_that_would_unpack_past_the_size_limit(batch, settings):
    settings.ARCHIVE_MAX_ZIP_BYTES = 2000
    upload = make_zip({f"IM{i}": data for i, data in enumerate(series_bytes(3))}, zipfile.ZIP_STORED)

    (outcome,) = services.ingest_upload(batch, upload)

    assert outcome.outcome == "rejected" and "would unpack to" in outcome.reason
    assert Instance.objects.count() == 0


def test_it_refuses_too_many_entries(batch, settings):
    settings.ARCHIVE_MAX_ZIP_ENTRIES = 2
    upload = make_zip({f"IM{i}": data for i, data in enumerate(series_bytes(3))})

    (outcome,) = services.ingest_upload(batch, upload)

    assert outcome.outcome == "rejected" and "holds 3 files, more than the limit of 2" in outcome.reason


def test_a_corrupt_zip_is_rejected_with_a_reason(batch):
    upload = SimpleUploadedFile("broken.zip", b"PK\x03\x04" + b"garbage" * 100)

    (outcome,) = services.ingest_upload(batch, upload)

    assert outcome.outcome == "rejected" and "not a readable zip" in outcome.reason
