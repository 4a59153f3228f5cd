"""The CT phantom generator: what a user of the synthetic data would check by hand.

Fast presets ("tiny" 64x64x24, "small" 128x128x~65); one test builds a "full" 512x512 volume.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage as ndi

from ml.phantom import (
    PRESETS, TISSUE_LABELS, PhantomConfig, generate_phantom, load_ground_truth, read_dicom_series,
    write_dicom_series, write_ground_truth,
)
from ml.phantom.cli import study_seed
from ml.phantom.config import diameter_quantile_mm
from ml.phantom.nodules import draw_count, draw_design

ROOT = Path(__file__).resolve().parents[2]
T = TISSUE_LABELS
CUBE = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def tiny():
    return generate_phantom(PhantomConfig.preset("tiny"), seed=1)


@pytest.fixture(scope="module")
def small():
    return generate_phantom(PhantomConfig.preset("small"), seed=0)


@pytest.fixture(scope="module")
def small_with_nodules():
    """Six small phantoms with four nodules each (all textures, shapes and attachments occur)."""
    cfg = PhantomConfig.preset("small", n_nodules_range=(4, 4), p_no_nodules=0.0)
    return [generate_phantom(cfg, seed=seed) for seed in range(6)]


def _mean_hu(ph, tissue_name, erode=True):
    mask = ph.tissue == T[tissue_name]
    if erode:
        mask = ndi.binary_erosion(mask, CUBE)
    assert mask.sum() > 50, f"too few {tissue_name} voxels to measure"
    return float(ph.hu[mask].mean()), float(ph.hu[mask].std())


# -- determinism ------------------------------------------------------------------------------

def test_same_seed_gives_identical_volumes_masks_and_lesions(tiny):
    again = generate_phantom(PhantomConfig.preset("tiny"), seed=1)
    assert np.array_equal(again.hu, tiny.hu)
    assert np.array_equal(again.label_mask, tiny.label_mask)
    assert np.array_equal(again.lung_mask, tiny.lung_mask)
    assert [lesion.to_dict() for lesion in again.lesions] == [lesion.to_dict() for lesion in tiny.lesions]
    assert again.spacing_zyx_mm == tiny.spacing_zyx_mm and again.origin_xyz_mm == tiny.origin_xyz_mm


def test_different_seeds_give_different_volumes(tiny):
    other = generate_phantom(PhantomConfig.preset("tiny"), seed=2)
    assert other.hu.shape != tiny.hu.shape or not np.array_equal(other.hu, tiny.hu)
    assert other.spacing_zyx_mm != tiny.spacing_zyx_mm


def test_label_mask_comes_from_the_shapes_not_from_the_noisy_image():
    quiet = generate_phantom(PhantomConfig.preset("small", noise_hu=5.0, n_nodules_range=(3, 3)), seed=4)
    noisy = generate_phantom(PhantomConfig.preset("small", noise_hu=60.0, n_nodules_range=(3, 3)), seed=4)
    assert quiet.lesions and np.array_equal(quiet.label_mask, noisy.label_mask)
    assert not np.array_equal(quiet.hu, noisy.hu)


# -- geometry -------------------------------------------------------------------------------------

def test_tiny_preset_is_int16_hu_on_a_64_by_64_by_24_grid(tiny):
    assert tiny.hu.shape == (24, 64, 64) and tiny.hu.dtype == np.int16
    assert tiny.label_mask.dtype == np.uint16 and tiny.label_mask.shape == tiny.hu.shape
    assert tiny.lung_mask.dtype == bool and tiny.lung_mask.shape == tiny.hu.shape
    assert tiny.hu.min() >= -1024 and tiny.hu.max() <= 3071
    assert np.array_equal(tiny.direction, np.eye(3))
    assert tiny.spacing_zyx_mm[1] == tiny.spacing_zyx_mm[2]


def test_full_preset_is_a_512_matrix_with_lidc_like_spacing():
    ph = generate_phantom(PhantomConfig.preset("full"), seed=11)
    z, y, x = ph.hu.shape
    assert (y, x) == (512, 512)
    assert 0.5 <= ph.spacing_zyx_mm[1] <= 0.98
    assert ph.slice_thickness_mm in PRESETS["full"].slice_thickness_choices_mm
    assert 240 <= z * ph.spacing_zyx_mm[0] <= 350 or z == PRESETS["full"].max_slices
    assert ph.lung_mask.sum() * ph.voxel_volume_ml > 1500  # adult lungs hold litres


def test_voxel_and_patient_coordinates_round_trip(tiny):
    ox, oy, oz = tiny.origin_xyz_mm
    dz, dy, dx = tiny.spacing_zyx_mm
    assert np.allclose(tiny.voxel_to_patient((3, 5, 7)), (ox + 7 * dx, oy + 5 * dy, oz + 3 * dz))
    zyx = np.random.default_rng(0).uniform(0, 60, size=(100, 3))
    assert np.allclose(tiny.patient_to_voxel(tiny.voxel_to_patient(zyx)), zyx)


# -- tissues ---------------------------------------------------------------------------------------

def test_tissues_have_plausible_hounsfield_units(small):
    assert -1010 <= _mean_hu(small, "air")[0] <= -985            # outside the body (clipped at -1024)
    assert -900 <= _mean_hu(small, "lung")[0] <= -800            # parenchyma away from vessels and nodules
    assert -130 <= _mean_hu(small, "fat")[0] <= -70
    assert 20 <= _mean_hu(small, "muscle")[0] <= 70
    assert 20 <= _mean_hu(small, "soft_tissue")[0] <= 70
    assert 40 <= _mean_hu(small, "liver")[0] <= 80
    assert _mean_hu(small, "bone_cortical", erode=False)[0] > 500
    assert 150 <= _mean_hu(small, "bone_cancellous", erode=False)[0] <= 400


def test_noise_has_the_requested_standard_deviation(small):
    _, std = _mean_hu(small, "muscle")
    assert std == pytest.approx(small.acquisition["noise_hu"], rel=0.2)


def test_vessels_overlap_solid_nodule_intensities(small):
    vessel_hu = small.hu[small.tissue == T["vessel"]]
    assert vessel_hu.size > 100
    assert np.mean(vessel_hu > -100) > 0.2   # thick vessels look like solid nodules


# -- nodules ----------------------------------------------------------------------------------------

def test_each_label_voxel_count_matches_the_analytic_volume(small_with_nodules):
    errors = []
    for ph in small_with_nodules:
        assert ph.lesions
        for lesion in ph.lesions:
            volume_ml = (ph.label_mask == lesion.id).sum() * ph.voxel_volume_ml
            rel = (volume_ml - lesion.volume_ml) / lesion.volume_ml
            # Discretisation error shrinks with size: a voxel's thickness relative to the diameter.
            assert abs(rel) <= max(0.05, max(ph.spacing_zyx_mm) / lesion.diameter_mm), lesion
            errors.append(rel)
    assert abs(np.mean(errors)) < 0.06  # unbiased overall


def test_each_label_centroid_is_the_lesion_centre(small_with_nodules):
    for ph in small_with_nodules:
        for lesion in ph.lesions:
            centroid = ph.voxel_to_patient(ndi.center_of_mass(ph.label_mask == lesion.id))
            assert np.abs(centroid - lesion.centre_xyz_mm).max() <= 0.5 * max(ph.spacing_zyx_mm), lesion
            lo, hi = np.asarray(lesion.bbox_xyz_mm)
            assert np.all(lo <= lesion.centre_xyz_mm) and np.all(np.asarray(lesion.centre_xyz_mm) <= hi)


def test_nodules_lie_in_the_lungs_or_on_the_pleura(small_with_nodules):
    attached = set()
    for ph in small_with_nodules:
        assert [lesion.id for lesion in ph.lesions] == list(range(1, len(ph.lesions) + 1))
        assert set(np.unique(ph.label_mask)) == {0, *[lesion.id for lesion in ph.lesions]}
        for lesion in ph.lesions:
            in_lung = ph.lung_mask[ph.label_mask == lesion.id].mean()
            if lesion.attached_to == "pleura":
                assert 0.5 <= in_lung < 1.0, lesion
            else:
                assert in_lung == 1.0, lesion
            if lesion.attached_to == "vessel":
                grown = ndi.binary_dilation(ph.label_mask == lesion.id, CUBE)
                assert (ph.tissue[grown] == T["vessel"]).any(), lesion
            assert 3.0 <= lesion.diameter_mm <= 30.0
            attached.add(lesion.attached_to)
    assert attached == {None, "vessel", "pleura"}


def test_solid_cores_are_dense_and_ground_glass_is_hazy():
    def core_means(texture):
        cfg = PhantomConfig.preset("small", n_nodules_range=(3, 3), nodule_diameter_mm_range=(8.0, 16.0),
                                   texture_probs=((texture, 1.0),), attach_probs=((None, 1.0),))
        means = []
        for seed in range(2):
            ph = generate_phantom(cfg, seed=seed)
            for lesion in ph.lesions:
                core = ndi.binary_erosion(ph.label_mask == lesion.id, CUBE)
                means.append(ph.hu[core].mean())
        assert means
        return np.array(means)

    assert np.all(core_means("solid") > -100)
    assert np.all((core_means("ground_glass") > -750) & (core_means("ground_glass") < -250))


def test_some_scans_have_no_nodules_and_others_several():
    counts = [len(generate_phantom(PhantomConfig.preset("tiny"), seed=seed).lesions) for seed in range(25)]
    assert 0 in counts and max(counts) >= 2
    rng = np.random.default_rng(0)
    draws = np.array([draw_count(PRESETS["full"], rng) for _ in range(4000)])
    assert np.mean(draws == 0) == pytest.approx(0.2, abs=0.03)
    assert draws.max() == 6


def test_nodule_diameters_follow_lidc_percentiles():
    assert np.allclose(diameter_quantile_mm(PRESETS["full"], [0.05, 0.25, 0.5, 0.75, 0.95]),
                       [4.3, 5.6, 7.1, 10.4, 20.5])
    rng = np.random.default_rng(1)
    sizes = [draw_design(PRESETS["full"], rng)["diameter_mm"] for _ in range(3000)]
    assert np.percentile(sizes, [25, 50, 75]) == pytest.approx([5.6, 7.1, 10.4], rel=0.08)
    assert 3.0 <= min(sizes) and max(sizes) <= 30.0


# -- DICOM -------------------------------------------------------------------------------------------

def _read_series_with_pydicom(folder):
    datasets = sorted((pydicom.dcmread(p) for p in Path(folder).glob("*.dcm")),
                      key=lambda d: float(d.ImagePositionPatient[2]))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets])
    return datasets, hu


@pytest.mark.parametrize("signed", [False, True])
def test_dicom_series_round_trips_hu_spacing_and_origin(tiny, tmp_path, signed):
    paths = write_dicom_series(tiny, tmp_path, patient_id="P-1", patient_name="Doe^Jane", signed=signed)
    assert len(paths) == tiny.hu.shape[0]
    datasets, hu = _read_series_with_pydicom(tmp_path)
    assert np.array_equal(hu, tiny.hu)
    first, second = datasets[0], datasets[1]
    assert [float(v) for v in first.PixelSpacing] == [tiny.spacing_zyx_mm[1], tiny.spacing_zyx_mm[2]]
    assert float(second.ImagePositionPatient[2]) - float(first.ImagePositionPatient[2]) == pytest.approx(
        tiny.spacing_zyx_mm[0])
    assert np.allclose([float(v) for v in first.ImagePositionPatient], tiny.origin_xyz_mm, atol=1e-6)
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    volume, spacing, origin = read_dicom_series(tmp_path)
    assert np.array_equal(volume, tiny.hu) and np.allclose(spacing, tiny.spacing_zyx_mm)
    assert np.allclose(origin, tiny.origin_xyz_mm)


def test_dicom_headers_describe_one_ct_series(tiny, tmp_path):
    write_dicom_series(tiny, tmp_path, patient_id="P-1", patient_name="Doe^Jane", accession="A123",
                       study_date="20240102", series_number=3)
    datasets, _ = _read_series_with_pydicom(tmp_path)
    d = datasets[0]
    assert d.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert d.SOPClassUID == d.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
    assert d.Modality == "CT" and d.PatientID == "P-1" and str(d.PatientName) == "Doe^Jane"
    assert d.AccessionNumber == "A123" and d.StudyDate == "20240102" and d.SeriesNumber == 3
    assert d.RescaleType == "HU" and d.PhotometricInterpretation == "MONOCHROME2" and d.SamplesPerPixel == 1
    assert float(d.WindowCenter) == -600 and float(d.WindowWidth) == 1500
    assert float(d.SliceThickness) == tiny.slice_thickness_mm
    assert d.Manufacturer == "RadLoop phantom" and d.BodyPartExamined == "CHEST"
    assert len({x.StudyInstanceUID for x in datasets}) == 1 and len({x.SeriesInstanceUID for x in datasets}) == 1
    assert len({x.SOPInstanceUID for x in datasets}) == len(datasets)
    assert [x.InstanceNumber for x in datasets] == list(range(1, len(datasets) + 1))


def test_dicom_uids_repeat_for_the_same_seed_and_differ_for_another(tiny, tmp_path):
    def uids(ph, folder):
        write_dicom_series(ph, folder, patient_id="P-1", patient_name="Doe^Jane")
        return [(d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID, d.FrameOfReferenceUID)
                for d in _read_series_with_pydicom(folder)[0]]

    first = uids(tiny, tmp_path / "a")
    assert first == uids(generate_phantom(PhantomConfig.preset("tiny"), seed=1), tmp_path / "b")
    other = uids(generate_phantom(PhantomConfig.preset("tiny"), seed=2), tmp_path / "c")
    assert not {u for row in first for u in row} & {u for row in other for u in row}


def test_two_phantoms_written_into_one_study_get_their_own_series_uids(tiny, tmp_path):
    other = generate_phantom(PhantomConfig.preset("tiny"), seed=2)
    write_dicom_series(tiny, tmp_path / "a", patient_id="P-1", patient_name="Doe^Jane", study_uid="1.2.3.4")
    write_dicom_series(other, tmp_path / "b", patient_id="P-1", patient_name="Doe^Jane", study_uid="1.2.3.4")
    a, b = (_read_series_with_pydicom(tmp_path / name)[0][0] for name in ("a", "b"))
    assert a.StudyInstanceUID == b.StudyInstanceUID == "1.2.3.4"
    assert a.SeriesInstanceUID != b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmdump (dcmtk) is not installed: apt-get install dcmtk")
def test_dcmtk_reads_the_files_without_warnings(tiny, tmp_path):
    paths = write_dicom_series(tiny, tmp_path, patient_id="P-1", patient_name="Doe^Jane")
    # +fo: a DICOM file with meta header is required; -dc: no silent repairs; +sd: every file of the folder.
    result = subprocess.run(["dcmdump", "+fo", "-dc", "-ll", "warn", "+sd", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert result.stdout.count("=CTImageStorage") == 2 * len(paths)   # meta header and data set
    assert result.stdout.count("=LittleEndianExplicit") == len(paths)


# -- ground truth and command line ----------------------------------------------------------------------

def test_ground_truth_files_round_trip(small_with_nodules, tmp_path):
    ph = small_with_nodules[0]
    path = write_ground_truth(ph, tmp_path, dicom={"patient_id": "P-1"})
    gt = load_ground_truth(tmp_path)
    assert path.name == "ground_truth.json"
    assert gt.seed == ph.seed and gt.config == ph.config
    assert gt.shape_zyx == ph.shape_zyx and gt.spacing_zyx_mm == ph.spacing_zyx_mm
    assert gt.origin_xyz_mm == ph.origin_xyz_mm and np.array_equal(gt.direction, ph.direction)
    assert [lesion.to_dict() for lesion in gt.lesions] == [lesion.to_dict() for lesion in ph.lesions]
    assert np.array_equal(gt.label_mask, ph.label_mask) and np.array_equal(gt.lung_mask, ph.lung_mask)
    assert gt.dicom == {"patient_id": "P-1"}
    assert np.allclose(gt.voxel_to_patient((1, 2, 3)), ph.voxel_to_patient((1, 2, 3)))


def test_config_round_trips_and_rejects_unknown_presets():
    cfg = PhantomConfig.preset("small", noise_hu=12.0)
    assert PhantomConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown phantom preset"):
        PhantomConfig.preset("huge")
    with pytest.raises(ValueError, match="texture_probs"):
        generate_phantom(PhantomConfig.preset("tiny", texture_probs=(("spiculated", 1.0),)))


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "ml.phantom", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_one_folder_per_study_with_slices_and_ground_truth(tmp_path):
    result = _run_cli("--n", "2", "--seed", "7", "--preset", "tiny", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("lesions=" in line and "shape=24x64x64" in line for line in lines)
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["PHANTOM-7-000", "PHANTOM-7-001"]
    for folder in folders:
        gt = load_ground_truth(folder)
        datasets, hu = _read_series_with_pydicom(folder / "dicom")
        assert len(datasets) == gt.shape_zyx[0] == 24
        assert gt.dicom["series_uid"] == datasets[0].SeriesInstanceUID
        assert datasets[0].PatientID == folder.name
        assert np.array_equal(hu, generate_phantom(gt.config, seed=gt.seed).hu)


def test_cli_study_i_is_the_same_whatever_n_is(tmp_path):
    result = _run_cli("--n", "1", "--seed", "7", "--start", "1", "--preset", "tiny", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    gt = load_ground_truth(tmp_path / "PHANTOM-7-001", masks=False)
    assert gt.seed == study_seed(7, 1)
    assert len({study_seed(7, i) for i in range(50)}) == 50


def test_cli_refuses_to_overwrite_a_written_study(tmp_path):
    assert _run_cli("--seed", "3", "--preset", "tiny", "--out", str(tmp_path)).returncode == 0
    again = _run_cli("--seed", "3", "--preset", "tiny", "--out", str(tmp_path))
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert _run_cli("--seed", "3", "--preset", "tiny", "--out", str(tmp_path), "--overwrite").returncode == 0
