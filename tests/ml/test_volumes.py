"""Series assembly, voxel <-> patient geometry and resampling (tiny in-memory DICOM series)."""
from __future__ import annotations

import numpy as np
import pytest

from ml.volumes import (SeriesError, Volume, geometry_warnings, load_series, resample, resample_mask,
                        resample_to_reference, slice_geometry)

from .dicom_factory import make_series, make_slice


def ramp(shape=(6, 5, 4)) -> np.ndarray:
    """HU that encode their own index: 100 * z + 10 * y + x - 1000."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (100 * z + 10 * y + x - 1000).astype(np.float32)


def test_it_orders_shuffled_slices_by_position_not_instance_number():
    hu = ramp()
    series = make_series(hu)
    rng = np.random.default_rng(0)
    shuffled = [series[i] for i in rng.permutation(len(series))]
    for n, ds in enumerate(shuffled):
        ds.InstanceNumber = n + 1          # misleading instance numbers
    volume, report = load_series(shuffled)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing_zyx_mm == (2.0, 0.8, 0.7)
    assert volume.origin_xyz_mm == (-10.0, 20.0, -100.0)
    assert report.warnings == [] and report.n_used == 6


def test_it_applies_rescale_slope_and_intercept():
    hu = ramp()
    volume, _ = load_series(make_series(hu, slope=2.0, intercept=-2048.0))
    np.testing.assert_allclose(volume.hu, hu, atol=1.0)


def test_it_fills_a_gap_by_interpolation_and_reports_it():
    hu = ramp((7, 3, 3))
    series = make_series(hu)
    del series[3]                              # slice at z index 3 missing
    volume, report = load_series(series)
    assert volume.shape == (7, 3, 3)
    np.testing.assert_allclose(volume.hu[3], hu[3])     # linear ramp: interpolation is exact
    assert report.gaps_filled == 1 and any("gap" in w for w in report.warnings)


def test_it_drops_duplicate_positions_with_a_warning():
    hu = ramp()
    series = make_series(hu)
    volume, report = load_series(series + [series[2]])
    assert volume.shape == hu.shape and report.duplicates == 1


def test_it_refuses_irregular_spacing():
    series = make_series(ramp((4, 3, 3)))
    series[2].ImagePositionPatient = [-10.0, 20.0, -100.0 + 2 * 2.0 + 0.7]
    with pytest.raises(SeriesError, match="irregular"):
        load_series(series)


def test_it_excludes_localizers_and_odd_sized_images_with_reasons():
    series = make_series(ramp())
    scout = make_slice(np.zeros((5, 4)), (0, 0, 0), (1, 0, 0), (0, 0, -1), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    odd = make_slice(np.zeros((8, 8)), (-10.0, 20.0, -90.0), (1, 0, 0), (0, 1, 0))
    volume, report = load_series([scout, *series, odd])
    assert volume.shape == (6, 5, 4)
    reasons = dict(report.excluded)
    assert "localizer" in reasons[0] and "differs" in reasons[7]


def test_oblique_series_maps_voxels_to_the_slice_positions():
    a = np.deg2rad(30)
    direction = np.array([[1, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]], float)  # columns x, y, z
    series = make_series(ramp(), direction=direction)
    volume, _ = load_series(series[::-1])
    np.testing.assert_allclose(volume.direction, direction, atol=1e-6)
    assert volume.spacing_zyx_mm[0] == pytest.approx(2.0)
    for k in (0, 3, 5):
        np.testing.assert_allclose(volume.voxel_to_patient([k, 0, 0]), series[k].ImagePositionPatient, atol=1e-6)
    # one row step moves 0.8 mm along the column direction cosine
    np.testing.assert_allclose(volume.voxel_to_patient([0, 1, 0]) - volume.voxel_to_patient([0, 0, 0]),
                               0.8 * direction[:, 1], atol=1e-9)


def test_voxel_patient_round_trip_is_exact_and_vectorised():
    a = np.deg2rad(20)
    direction = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    volume = Volume(np.zeros((10, 12, 14), np.int16), (2.5, 0.7, 0.6), (5.0, -3.0, 100.0), direction)
    zyx = np.random.default_rng(1).uniform(0, 10, (50, 3))
    np.testing.assert_allclose(volume.patient_to_voxel(volume.voxel_to_patient(zyx)), zyx, atol=1e-9)
    np.testing.assert_allclose(volume.voxel_to_patient([1, 0, 0]), np.array([5.0, -3.0, 102.5]))


def test_resampling_preserves_hu_and_physical_size():
    z, y, x = np.meshgrid(np.arange(20), np.arange(30), np.arange(30), indexing="ij")
    hu = (3.0 * z * 2.5 + 2.0 * y * 0.7 - x * 0.7).astype(np.float32)   # linear in mm: trilinear is exact
    volume = Volume(hu, (2.5, 0.7, 0.7), (1.0, 2.0, 3.0))
    iso = resample(volume, (1.0, 1.0, 1.0))
    assert iso.shape == (48, 21, 21)
    extent = (np.asarray(iso.shape) - 1) * 1.0
    assert np.all(extent <= (np.asarray(volume.shape) - 1) * volume.spacing_zyx_mm + 1e-6)
    kz, ky, kx = np.meshgrid(*[np.arange(n) for n in iso.shape], indexing="ij")
    np.testing.assert_allclose(iso.hu, 3.0 * kz + 2.0 * ky - kx, atol=1e-3)
    np.testing.assert_allclose(iso.voxel_to_patient([10, 10, 10]), [11.0, 12.0, 13.0])
    back = resample_to_reference(iso.hu, iso, volume)
    inner = (slice(0, 19), slice(0, 29), slice(0, 29))      # voxels covered by the coarse grid
    np.testing.assert_allclose(back[inner], hu[inner], atol=1e-3)


def test_mask_resampling_round_trip_keeps_a_ball():
    zz, yy, xx = np.meshgrid(np.arange(30) * 2.0, np.arange(40) * 0.7, np.arange(40) * 0.7, indexing="ij")
    ball = (zz - 30) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 <= 8.0 ** 2
    volume = Volume(np.zeros(ball.shape, np.int16), (2.0, 0.7, 0.7))
    iso = resample(volume, (1.0, 1.0, 1.0))
    mask_iso = resample_mask(ball, volume, iso)
    assert mask_iso.sum() * 1.0 == pytest.approx(4 / 3 * np.pi * 8 ** 3, rel=0.08)
    back = resample_mask(mask_iso, iso, volume)
    assert np.logical_and(back, ball).sum() * 2 / (back.sum() + ball.sum()) > 0.9


def test_a_real_ct_file_from_pydicom_loads_in_hu():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    volume, report = load_series([path])
    assert volume.shape == (1, 128, 128) and volume.spacing_zyx_mm == pytest.approx((5.0, 0.661468, 0.661468))
    assert volume.hu.dtype == np.float32 and volume.hu.min() >= -1024
    assert any("single-slice" in w for w in report.warnings)


def test_an_empty_or_all_localizer_series_is_refused():
    with pytest.raises(SeriesError, match="empty"):
        load_series([])
    scout = make_slice(np.zeros((5, 4)), (0, 0, 0), (1, 0, 0), (0, 0, -1), image_type=("ORIGINAL", "LOCALIZER"))
    with pytest.raises(SeriesError, match="no usable"):
        load_series([scout])


# -- hostile geometry -------------------------------------------------------------------------


def test_a_scaled_orientation_gives_the_true_slice_spacing_and_is_flagged():
    series = make_series(ramp((4, 3, 3)), spacing_zyx=(2.5, 0.8, 0.7))
    for ds in series:
        ds.ImageOrientationPatient = [2.0, 0.0, 0.0, 0.0, 2.0, 0.0]   # lengths 2, not 1
    volume, _ = load_series(series)
    assert volume.spacing_zyx_mm[0] == pytest.approx(2.5)          # not 10 mm
    np.testing.assert_allclose(volume.direction, np.eye(3))
    warnings = geometry_warnings([slice_geometry(ds) for ds in series])
    assert any("not unit length on 4 image(s)" in w and "normalised" in w for w in warnings)


def test_four_slices_with_extreme_positions_are_refused_before_allocating():
    series = make_series(ramp((4, 3, 3)), spacing_zyx=(1.0, 0.8, 0.7))
    series[3].ImagePositionPatient = [-10.0, 20.0, 200_000.0]
    with pytest.raises(SeriesError, match="at most 2000"):
        load_series(series)


def test_the_slice_and_voxel_caps_are_parameters():
    series = make_series(ramp((6, 5, 4)))
    with pytest.raises(SeriesError, match="at most 5 are built"):
        load_series(series, max_slices=5)
    with pytest.raises(SeriesError, match="voxels; at most 100"):
        load_series(series, max_voxels=100)
    assert load_series(series, max_slices=6, max_voxels=120)[0].shape == (6, 5, 4)
    with pytest.raises(SeriesError, match="20 voxels; at most 19"):
        load_series(series[:1], max_voxels=19)  # one slice is checked too


def test_a_volume_that_would_be_mostly_interpolated_is_refused():
    series = make_series(ramp((4, 3, 3)), spacing_zyx=(1.0, 0.8, 0.7))
    series[3].ImagePositionPatient = [-10.0, 20.0, -100.0 + 40.0]   # 37 slices missing before the last
    with pytest.raises(SeriesError, match="mostly interpolated"):
        load_series(series)


def test_one_slice_with_another_pixel_spacing_or_frame_of_reference_is_left_out_and_flagged():
    hu = ramp()
    series = make_series(hu)
    for ds in series:
        ds.FrameOfReferenceUID = "1.2.3"
    series[2].PixelSpacing = [0.9, 0.9]
    series[3].FrameOfReferenceUID = "1.2.4"
    volume, report = load_series(series)
    assert volume.shape == hu.shape and report.n_used == 4 and report.gaps_filled == 2
    reasons = dict(report.excluded)
    assert "pixel spacing 0.9×0.9 mm" in reasons[2] and "FrameOfReferenceUID" in reasons[3]
    warnings = geometry_warnings([slice_geometry(ds) for ds in series])
    assert "The images of this series lie in 2 frames of reference (FrameOfReferenceUID differs)." in warnings
    assert any("2 image(s) differ from the rest of the series" in w for w in warnings)


@pytest.mark.parametrize("attribute, value, refusal, flag", [
    ("PixelSpacing", [0.0, 0.7], "PixelSpacing is missing, zero or negative", "PixelSpacing is zero, negative or not a number on 6"),
    ("PixelSpacing", [-0.8, 0.7], "PixelSpacing is missing, zero or negative", "PixelSpacing is zero, negative or not a number on 6"),
    ("PixelSpacing", None, "PixelSpacing is missing, zero or negative", "PixelSpacing is missing on 6"),
    ("ImageOrientationPatient", [1, 0, 0, 0.2, 1, 0], "not perpendicular", "not perpendicular on 6 image(s) (78.7°)"),
    ("ImageOrientationPatient", [0, 0, 0, 0, 1, 0], "zero-length vector", "not unit length on 6"),
    ("ImagePositionPatient", [float("nan"), 0.0, 0.0], "not three finite numbers", "not a finite number (NaN or infinity) on 6"),
    ("ImagePositionPatient", [0.0, float("inf"), 0.0], "not three finite numbers", "not a finite number (NaN or infinity) on 6"),
])
def test_every_image_with_untrustworthy_geometry_refuses_the_volume_with_the_reason(attribute, value, refusal, flag):
    series = make_series(ramp())
    for ds in series:
        if value is None:
            delattr(ds, attribute)
        else:
            setattr(ds, attribute, value)
    with pytest.raises(SeriesError, match=refusal):
        load_series(series)
    warnings = geometry_warnings([slice_geometry(ds) for ds in series])
    assert any(flag in w for w in warnings), warnings
    assert warnings[-1].startswith("No CT volume can be built:")


def test_one_nan_position_leaves_that_slice_out_and_the_rest_is_read():
    hu = ramp((7, 3, 3))
    series = make_series(hu)
    series[6].ImagePositionPatient = [float("nan"), 20.0, -88.0]
    volume, report = load_series(series)
    assert volume.shape == (6, 3, 3)
    assert "not three finite numbers" in dict(report.excluded)[6]
    warnings = geometry_warnings([slice_geometry(ds) for ds in series])
    assert warnings[0] == "ImagePositionPatient is not a finite number (NaN or infinity) on 1 image(s)."


def test_duplicates_gaps_and_irregular_steps_are_flagged_as_sentences():
    series = make_series(ramp((7, 3, 3)))
    gappy = [*series[:3], *series[4:], series[1]]
    warnings = geometry_warnings([slice_geometry(ds) for ds in gappy])
    assert warnings == ["1 slice(s) at a duplicate position dropped (first kept).",
                        "1 missing slice(s) in 1 gap(s) filled by linear interpolation."]
    series[2].ImagePositionPatient = [-10.0, 20.0, -100.0 + 2 * 2.0 + 0.7]
    warnings = geometry_warnings([slice_geometry(ds) for ds in series])
    assert len(warnings) == 1 and warnings[0].startswith("No CT volume can be built: irregular slice positions")


def test_a_clean_series_has_no_geometry_warnings():
    assert geometry_warnings([slice_geometry(ds) for ds in make_series(ramp())]) == []


def test_a_multi_frame_ct_is_refused_by_the_pre_read_with_its_reason():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("emri_small.dcm")   # a multi-frame image (per-frame functional groups)
    with pytest.raises(SeriesError, match="multi-frame CT .* is not supported by the AI pre-read"):
        load_series([path])


def test_a_deflated_ct_series_is_read(tmp_path):
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    hu = ramp()
    paths = []
    for k, ds in enumerate(make_series(hu)):
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        paths.append(tmp_path / f"{k}.dcm")
        pydicom.dcmwrite(paths[-1], ds, enforce_file_format=True)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    volume, report = load_series(paths)
    np.testing.assert_array_equal(volume.hu, hu)


def test_a_series_missing_a_third_of_its_slices_keeps_its_true_spacing():
    hu = ramp((6, 3, 3))
    series = make_series(hu)
    kept = [series[i] for i in (0, 1, 3, 5)]     # steps 2, 4, 4 mm: the median (4 mm) is not the spacing
    volume, report = load_series(kept)
    assert volume.spacing_zyx_mm[0] == pytest.approx(2.0) and volume.shape == (6, 3, 3)
    np.testing.assert_allclose(volume.hu, hu, atol=1e-4)   # a linear ramp: interpolation is exact
    assert report.gaps_filled == 2
