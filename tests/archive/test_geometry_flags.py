"""Geometry is flagged, never silently wrong: each problem is stored whole, flagged on the series,
shown on the study page and in the review API, and the viewer's grid is the one the AI reads."""
from __future__ import annotations

import io

import numpy as np
import pytest
from django.urls import reverse

from tests.factories import ct_slice, to_bytes, uid
from webapp.archive import services
from webapp.archive.models import Instance, Series
from webapp.review.geometry import series_grid

pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(cast):
    return services.start_batch(cast.admin)


def prepared(batch, slices) -> Series:
    """Ingest the datasets (each must be stored) and prepare their series."""
    for ds in slices:
        outcome = services.ingest_stream(batch, "x.dcm", io.BytesIO(to_bytes(ds)))
        assert outcome.outcome == "stored", outcome.reason
    return services.prepare_series(Series.objects.get().pk)


def change(index: int | None = None, **attributes):
    """Five slices; ``attributes`` set on slice ``index`` (on every slice when None)."""
    out = []
    for i in range(5):
        ds = ct_slice(index=i)
        if index is None or index == i:
            for keyword, value in attributes.items():
                if value is None:
                    delattr(ds, keyword)
                else:
                    setattr(ds, keyword, value)
        out.append(ds)
    return out


CASES = {
    "mixed frame of reference": (change(2, FrameOfReferenceUID=uid("another-frame")),
                                 "The images of this series lie in 2 frames of reference (FrameOfReferenceUID differs)."),
    "zero pixel spacing": (change(PixelSpacing=[0.0, 0.7]), "PixelSpacing is zero, negative or not a number on 5 image(s)."),
    "negative pixel spacing": (change(PixelSpacing=[-0.7, -0.7]), "PixelSpacing is zero, negative or not a number on 5 image(s)."),
    "missing pixel spacing": (change(PixelSpacing=None), "PixelSpacing is missing on 5 image(s)."),
    "non-unit orientation": (change(ImageOrientationPatient=[2, 0, 0, 0, 2, 0]),
                             "ImageOrientationPatient vectors are not unit length on 5 image(s) (lengths 2, 2); they were normalised."),
    "non-orthogonal orientation": (change(ImageOrientationPatient=[1, 0, 0, 0.3, 1, 0]),
                                   "ImageOrientationPatient row and column vectors are not perpendicular on 5 image(s) (73.3°)."),
    "NaN position": (change(3, ImagePositionPatient=["nan", -100.0, -42.5]),
                     "ImagePositionPatient is not a finite number (NaN or infinity) on 1 image(s)."),
    "infinite position": (change(3, ImagePositionPatient=[-100.0, "inf", -42.5]),
                          "ImagePositionPatient is not a finite number (NaN or infinity) on 1 image(s)."),
    "irregular spacing": (change(3, ImagePositionPatient=[-100.0, -100.0, -42.0]),
                          "No CT volume can be built: irregular slice positions (steps [2.5, 2.5, 3.0, 2.0] mm)."),
    "gap": ([ct_slice(index=i) for i in (0, 1, 2, 4, 5)], "1 missing slice(s) in 1 gap(s) filled by linear interpolation."),
    "duplicate position": ([*change(), ct_slice(index=2, sop=uid("dup"))],
                           "1 slice(s) at a duplicate position dropped (first kept)."),
}


@pytest.mark.parametrize("case", CASES)
def test_each_geometry_problem_is_stored_whole_and_flagged(batch, case):
    slices, flag = CASES[case]

    series = prepared(batch, slices)

    assert Instance.objects.count() == len(slices)
    assert flag in series.geometry_warnings, series.geometry_warnings


def test_a_clean_series_has_no_flags(batch):
    assert prepared(batch, change()).geometry_warnings == []


def test_a_non_unit_orientation_gives_2_5_mm_not_10_mm(batch):
    series = prepared(batch, change(ImageOrientationPatient=[2, 0, 0, 0, 2, 0]))

    assert series.slice_spacing_mm == pytest.approx(2.5)
    grid = series_grid(series)
    assert grid.spacing_zyx_mm == pytest.approx((2.5, 0.7, 0.7)) and grid.shape_zyx == (5, 16, 16)


def test_one_inconsistent_slice_is_stored_whole_flagged_and_left_out_of_the_grid(batch):
    slices = change()
    slices.insert(2, ct_slice(index=9, rows=32, columns=32, sop=uid("odd")))  # first images decide nothing

    series = prepared(batch, slices)

    assert Instance.objects.count() == 6 and Instance.objects.filter(rows=32).exists()
    assert ("1 image(s) differ from the rest of the series in orientation, matrix, pixel spacing or frame of "
            "reference and are left out of the volume.") in series.geometry_warnings
    assert (series.rows, series.columns) == (16, 16)
    assert series_grid(series).shape_zyx == (5, 16, 16)


def test_four_slices_spread_over_kilometres_make_no_grid(batch, settings):
    slices = change()[:4]
    slices[3].ImagePositionPatient = [-100.0, -100.0, 500_000.0]

    series = prepared(batch, slices)

    assert any(w.startswith("No CT volume can be built: the slice positions span") and "at most 2000" in w
               for w in series.geometry_warnings)
    assert series_grid(series) is None
    settings.VOLUME_MAX_SLICES = 3
    assert "at most 3 are built" in services.prepare_series(series.pk).geometry_warnings[0]


def test_the_study_page_and_the_review_api_show_the_flags(batch, radiologist_client):
    series = prepared(batch, change(2, FrameOfReferenceUID=uid("another-frame")))

    page = radiologist_client.get(reverse("archive:study_detail", args=[series.study.study_uid]))
    case = radiologist_client.get(f"/api/review/studies/{series.study.study_uid}/")

    html = page.content.decode()
    assert page.status_code == 200 and 'class="messages geometry-warnings"' in html
    assert "⚠ The images of this series lie in 2 frames of reference (FrameOfReferenceUID differs)." in html
    assert case.status_code == 200
    assert case.json()["series"][0]["geometry_warnings"] == series.geometry_warnings
    assert len(series.geometry_warnings) == 3  # the frames, the image left out, the gap it leaves


def test_a_clean_series_shows_no_warning_box(batch, radiologist_client):
    series = prepared(batch, change())

    page = radiologist_client.get(reverse("archive:study_detail", args=[series.study.study_uid]))

    assert "geometry-warnings" not in page.content.decode()
    case = radiologist_client.get(f"/api/review/studies/{series.study.study_uid}/").json()
    assert case["series"][0]["geometry_warnings"] == []


def enhanced_ct(frames: int = 3, rows: int = 16, columns: int = 16):
    """A valid multi-frame Enhanced CT image: geometry in the shared / per-frame functional groups."""
    from pydicom.dataset import Dataset

    ds = ct_slice(index=0, rows=rows, columns=columns, series="enhanced")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SliceLocation"):
        delattr(ds, keyword)
    ds.NumberOfFrames = frames
    measures, orientation, shared = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.7, 0.7], 2.5
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(frames):
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [-100.0, -100.0, -50.0 + 2.5 * k]
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.full((frames, rows, columns), 24, np.int16).tobytes()
    return ds


def test_a_multi_frame_ct_is_stored_and_its_pre_read_ends_with_the_reason(batch, radiologist_client):
    from webapp.modelops import services as modelops

    series = prepared(batch, [enhanced_ct()])
    run = modelops.queue_inference(series)
    result = modelops.run_inference(run.pk, lambda model: pytest.fail("the model must not be loaded"))

    reason = "multi-frame CT (one file per series, e.g. Enhanced CT) is not supported by the AI pre-read"
    assert series.geometry_warnings == [f"No CT volume can be built: {reason}."]
    assert result.state == "failed" and reason in result.error
    page = radiologist_client.get(reverse("archive:study_detail", args=[series.study.study_uid])).content.decode()
    assert reason in page and "AI failed" in page


def test_a_deflated_ct_series_is_stored_flag_free_and_read_as_a_volume(batch, archive_dir):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from ml.volumes import load_series

    slices = change()
    for ds in slices:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    series = prepared(batch, slices)

    assert series.geometry_warnings == [] and series.slice_spacing_mm == pytest.approx(2.5)
    paths = [archive_dir / p for p in series.instances.values_list("file_path", flat=True)]
    volume, _ = load_series(paths)  # what the pre-read does with the stored files
    assert volume.shape == (5, 16, 16) and volume.hu[2, 8, 8] == pytest.approx(42.0)


def test_preparing_a_flagged_series_whose_images_cannot_be_rendered_keeps_the_flags(batch, archive_dir):
    from webapp.archive.rendering import UnrenderableImage

    for ds in change(3, ImagePositionPatient=["nan", -100.0, -42.5]):
        services.ingest_stream(batch, "x.dcm", io.BytesIO(to_bytes(ds)))
    for instance in Instance.objects.all():  # the disk went bad after ingest
        path = archive_dir / instance.file_path
        path.write_bytes(path.read_bytes()[:300])

    with pytest.raises(UnrenderableImage):  # the thumbnail view answers a placeholder for it
        services.prepare_series(Series.objects.get().pk)

    series = Series.objects.get()
    assert series.thumbnail == ""
    assert "ImagePositionPatient is not a finite number (NaN or infinity) on 1 image(s)." in series.geometry_warnings
