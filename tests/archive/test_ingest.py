"""The ingest service: every rejection reason, idempotency, atomicity."""
from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from tests.factories import ct_slice, series_bytes, to_bytes, uid
from webapp.accounts.models import AuditEvent
from webapp.archive import services
from webapp.archive.models import Instance, Series, Study, UploadBatch, UploadItem

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(cast):
    return services.start_batch(cast.admin)


def ingest(batch, data: bytes, name: str = "file.dcm"):
    return services.ingest_stream(batch, name, io.BytesIO(data))


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts] if root.exists() else []


def assert_nothing_stored(archive_dir):
    assert Instance.objects.count() == 0
    assert Series.objects.count() == 0
    assert Study.objects.count() == 0
    assert files_in(archive_dir) == []
    incoming = archive_dir / ".incoming"
    assert not incoming.exists() or list(incoming.iterdir()) == []


def test_it_stores_a_series_with_its_attributes(batch, archive_dir):
    outcomes = [ingest(batch, data, f"{i}.dcm") for i, data in enumerate(series_bytes(4))]

    assert [o.outcome for o in outcomes] == ["stored"] * 4
    study = Study.objects.get()
    assert (study.patient_id, study.patient_name, study.accession_number) == ("PAT-1", "Doe^Jane", "ACC1")
    assert str(study.study_date) == "2026-01-02"
    series = Series.objects.get()
    assert (series.modality, series.rows, series.columns) == ("CT", 16, 16)
    assert (series.pixel_spacing_row_mm, series.pixel_spacing_col_mm, series.slice_thickness_mm) == (0.7, 0.7, 2.5)
    first = Instance.objects.get(instance_number=1)
    assert first.position_z_mm == -50.0 and first.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    stored = archive_dir / first.file_path
    assert stored.read_bytes() == series_bytes(1)[0]
    # The recorded offset points at the raw pixels: one seek serves a frame.
    with open(stored, "rb") as f:
        f.seek(first.pixel_data_offset)
        raw = f.read(first.pixel_data_length)
    assert raw == pydicom.dcmread(stored).PixelData
    assert first.file_path == f"{study.study_uid}/{series.series_uid}/{first.sop_uid}.dcm"


def test_resending_an_identical_instance_is_a_no_op(batch, archive_dir):
    data = series_bytes(1)[0]
    assert ingest(batch, data).outcome == "stored"
    again = ingest(batch, data)

    assert again.outcome == "duplicate"
    assert Instance.objects.count() == 1
    assert len(files_in(archive_dir)) == 1


def test_it_rejects_the_same_sop_uid_with_different_content(batch, archive_dir):
    ingest(batch, series_bytes(1)[0])
    changed = ct_slice(index=0, PatientComments="edited")

    outcome = ingest(batch, to_bytes(changed))

    assert outcome.outcome == "rejected"
    assert "already stored with different content" in outcome.reason
    stored = archive_dir / Instance.objects.get().file_path
    assert stored.read_bytes() == series_bytes(1)[0]  # the original is untouched


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"hello, this is not an image" * 10, "not a DICOM file"),
        (b"", "not a DICOM file"),
        (b"\0" * 128 + b"DICM" + b"\x02\x00", "missing TransferSyntaxUID"),
    ],
)
def test_it_rejects_files_that_are_not_dicom(batch, archive_dir, data, reason):
    outcome = ingest(batch, data)

    assert outcome.outcome == "rejected"
    assert reason in outcome.reason
    assert_nothing_stored(archive_dir)


@pytest.mark.parametrize("cut", ["inside the pixels", "inside the pixel data header"])
def test_it_rejects_a_truncated_file(batch, archive_dir, cut):
    data = series_bytes(1)[0]
    pixel_tag = data.rindex(b"\xe0\x7f\x10\x00")
    keep = len(data) - 100 if cut == "inside the pixels" else pixel_tag + 6

    outcome = ingest(batch, data[:keep])

    assert outcome.outcome == "rejected"
    assert "truncated" in outcome.reason
    assert_nothing_stored(archive_dir)


def test_it_rejects_an_object_without_pixel_data(batch, archive_dir):
    ds = ct_slice()
    del ds.PixelData

    outcome = ingest(batch, to_bytes(ds))

    assert outcome.outcome == "rejected" and "no pixel data" in outcome.reason
    assert_nothing_stored(archive_dir)


def test_it_rejects_pixel_data_shorter_than_rows_columns_bits(batch, archive_dir):
    ds = ct_slice(rows=16, columns=16)
    ds.Rows = 32  # header claims 32×16, pixels hold 16×16

    outcome = ingest(batch, to_bytes(ds))

    assert outcome.outcome == "rejected"
    assert "needs 1024" in outcome.reason and "is 512 bytes" in outcome.reason
    assert_nothing_stored(archive_dir)


@pytest.mark.parametrize("field", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_it_rejects_missing_required_uids(batch, archive_dir, field):
    ds = ct_slice()
    delattr(ds, field)

    outcome = ingest(batch, to_bytes(ds))

    assert outcome.outcome == "rejected" and f"missing required UID {field}" in outcome.reason
    assert_nothing_stored(archive_dir)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "1.2.3/../../4", "1.2.abc", "1." + "2" * 70, "1..2"])
def test_it_rejects_invalid_uids_before_they_reach_a_path(batch, archive_dir, bad):
    ds = ct_slice()
    ds.SeriesInstanceUID = bad

    outcome = ingest(batch, to_bytes(ds))

    assert outcome.outcome == "rejected" and "invalid SeriesInstanceUID" in outcome.reason
    assert_nothing_stored(archive_dir)
    assert not any(".." in str(p) for p in archive_dir.parent.rglob("*"))


def test_it_rejects_files_over_the_size_limit(batch, archive_dir, settings):
    settings.ARCHIVE_MAX_FILE_BYTES = 1000
    data = series_bytes(1)[0]
    assert len(data) > 1000

    outcome = ingest(batch, data)

    assert outcome.outcome == "rejected" and "larger than the limit" in outcome.reason
    assert_nothing_stored(archive_dir)


def test_it_rejects_an_unsupported_transfer_syntax(batch, archive_dir):
    ds = ct_slice()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder here
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    data = to_bytes(ds)

    outcome = ingest(batch, data)

    assert outcome.outcome == "rejected"
    assert "unsupported transfer syntax" in outcome.reason or "cannot be decoded" in outcome.reason
    assert_nothing_stored(archive_dir)


def test_a_slice_whose_geometry_contradicts_its_series_is_stored_and_the_series_flagged(batch, archive_dir):
    ingest(batch, to_bytes(ct_slice(index=0)))

    outcome = ingest(batch, to_bytes(ct_slice(index=1, rows=32, columns=32)))
    other_spacing = ingest(batch, to_bytes(ct_slice(index=2, spacing_mm=(0.9, 0.9))))

    assert outcome.outcome == "stored" and other_spacing.outcome == "stored"  # no data is lost
    assert Instance.objects.count() == 3
    series = services.prepare_series(Series.objects.get().pk)
    assert any("differ from the rest of the series" in w for w in series.geometry_warnings)


def test_a_localizer_in_a_ct_series_is_not_a_geometry_conflict(batch):
    scout = ct_slice(index=0, rows=32, columns=32, orientation=(0, 1, 0, 0, 0, -1), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    assert ingest(batch, to_bytes(scout)).outcome == "stored"
    assert ingest(batch, to_bytes(ct_slice(index=1))).outcome == "stored"
    assert ingest(batch, to_bytes(ct_slice(index=2))).outcome == "stored"

    series = Series.objects.get()
    assert (series.rows, series.columns) == (16, 16)  # the axial slices define the volume geometry
    assert series.image_orientation == [1, 0, 0, 0, 1, 0]


def test_it_rejects_a_study_that_changes_patient(batch, archive_dir):
    ingest(batch, to_bytes(ct_slice(index=0)))

    outcome = ingest(batch, to_bytes(ct_slice(index=1, patient_id="SOMEONE-ELSE")))

    # the reason names what differs, never the stored patient (see tests/archive/test_quarantine.py)
    assert outcome.outcome == "rejected" and "(PatientID) does not match the patient" in outcome.reason
    assert "PAT-1" not in outcome.reason
    assert Instance.objects.count() == 1


def test_every_outcome_is_recorded_and_rejections_are_audited(batch, cast):
    ingest(batch, series_bytes(1)[0], "good.dcm")
    ingest(batch, b"junk", "bad.txt")

    assert list(UploadItem.objects.values_list("name", "outcome")) == [("good.dcm", "stored"), ("bad.txt", "rejected")]
    event = AuditEvent.objects.get(action="archive.upload.file_rejected")
    assert event.actor == cast.admin and event.details["file"] == "bad.txt"
    assert AuditEvent.objects.filter(action="archive.study.created").count() == 1


def test_a_crash_while_placing_the_file_leaves_nothing(batch, archive_dir, monkeypatch):
    from webapp.archive.storage import AtomicFileSystemStorage

    def boom(self, tmp_path, name):
        raise OSError("disk full")

    monkeypatch.setattr(AtomicFileSystemStorage, "commit_incoming", boom)
    with pytest.raises(OSError):
        ingest(batch, series_bytes(1)[0])

    assert_nothing_stored(archive_dir)


def test_a_failure_right_after_the_file_is_placed_removes_it(batch, archive_dir, monkeypatch):
    from webapp.archive.storage import AtomicFileSystemStorage

    real_commit = AtomicFileSystemStorage.commit_incoming

    def place_then_crash(self, tmp_path, name):
        real_commit(self, tmp_path, name)
        assert (archive_dir / name).exists()
        raise RuntimeError("crash right after the rename")

    monkeypatch.setattr(AtomicFileSystemStorage, "commit_incoming", place_then_crash)
    with pytest.raises(RuntimeError):
        ingest(batch, series_bytes(1)[0])

    assert_nothing_stored(archive_dir)


def test_finish_batch_queues_each_series_once_and_is_idempotent(batch, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *args, **kw: sent.append((name, args)))
    for data in series_bytes(3) + series_bytes(2, series="series-2"):
        ingest(batch, data)

    with django_capture_on_commit_callbacks(execute=True):
        summary = services.finish_batch(batch)
    with django_capture_on_commit_callbacks(execute=True):
        services.finish_batch(batch)

    assert summary["counts"]["stored"] == 5
    assert sorted(sent) == sorted(("workers.prepare_series", (s.pk,)) for s in Series.objects.all())
    assert UploadBatch.objects.get().state == "finished"


def test_prepare_series_measures_spacing_from_positions_and_renders_a_thumbnail(batch, archive_dir):
    for data in series_bytes(5, slice_spacing_mm=1.25):
        ingest(batch, data)

    series = services.prepare_series(Series.objects.get().pk)

    assert series.slice_spacing_mm == pytest.approx(1.25)
    assert series.geometry_warnings == []
    png = (archive_dir / series.thumbnail).read_bytes()
    assert png.startswith(b"\x89PNG")


def test_prepare_series_reports_gaps_and_duplicate_positions(batch):
    for index in (0, 1, 2, 5, 6):
        ingest(batch, to_bytes(ct_slice(index=index)))
    ingest(batch, to_bytes(ct_slice(index=6, sop=generate_uid())))

    series = services.prepare_series(Series.objects.get().pk)

    assert series.slice_spacing_mm == pytest.approx(2.5)
    assert "2 missing slice(s) in 1 gap(s) filled by linear interpolation." in series.geometry_warnings
    assert "1 slice(s) at a duplicate position dropped (first kept)." in series.geometry_warnings


def test_uids_are_what_the_factory_promises():
    assert uid("x") == uid("x") and uid("x") != uid("y")


def test_a_stow_series_is_prepared_only_once_it_has_been_quiet(cast, archive_dir, settings,
                                                               django_capture_on_commit_callbacks, monkeypatch):
    """A PACS may send one series over several STOW-RS requests: each request schedules a check
    SERIES_QUIET_SECONDS later, and a check that sees newer instances leaves the work to a later one."""
    from datetime import timedelta

    from django.utils import timezone

    from webapp.modelops import services as modelops

    settings.SERIES_QUIET_SECONDS = 30
    sent = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *args, **kw: sent.append((name, args, kw)))
    first = services.start_batch(cast.admin, UploadBatch.Source.STOW)
    for data in series_bytes(2):
        ingest(first, data)
    with django_capture_on_commit_callbacks(execute=True):
        services.finish_batch(first)
    series = Series.objects.get()
    assert sent == [("workers.prepare_series", (series.pk, 30), {"countdown": 30})]

    # The first check runs while the second request has just brought more slices: nothing is prepared.
    assert services.series_still_arriving(series.pk, 30)
    assert modelops.prepare_and_queue(series.pk, 30) is None
    assert Series.objects.get().prepared_at is None
    # Thirty quiet seconds later the last request's check prepares it and queues inference.
    Instance.objects.filter(series=series).update(created_at=timezone.now() - timedelta(seconds=31))
    assert not services.series_still_arriving(series.pk, 30)
    with django_capture_on_commit_callbacks(execute=True):
        run = modelops.prepare_and_queue(series.pk, 30)
    assert run is not None and run.state == "queued"
    assert Series.objects.get().prepared_at is not None


def test_an_upload_batch_ends_its_series_at_once(batch, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *args, **kw: sent.append((name, args, kw)))
    ingest(batch, series_bytes(1)[0])
    with django_capture_on_commit_callbacks(execute=True):
        services.finish_batch(batch)
    assert sent == [("workers.prepare_series", (Series.objects.get().pk,), {})]


def test_a_multi_valued_name_is_stored_with_dicoms_separator(batch):
    ds = ct_slice(index=1)
    ds.PatientName = ["Doe^Jane", "Roe^Janet"]  # two values (an alias), as some RIS send
    ds.InstitutionName = "General Hospital"
    outcome = ingest(batch, to_bytes(ds))
    assert outcome.outcome == "stored", outcome.reason
    study = Study.objects.get()
    assert study.patient_name == "Doe^Jane\\Roe^Janet"  # not Python's "['Doe^Jane', 'Roe^Janet']"
