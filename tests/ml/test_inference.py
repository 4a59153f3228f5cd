"""Inference with the SHIPPED model: a nodule planted at a known patient position is found there,
with the right size, whatever the volume's orientation; plus sliding-window and transform contracts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from ml.inference import Predictor
from ml.inference.sliding import sliding_window
from ml.phantom import TISSUE_LABELS, PhantomConfig, generate_phantom
from ml.transforms import apply_array, apply_points, invert_array
from ml.volumes import Volume

WEIGHTS = Path(__file__).resolve().parents[2] / "ml" / "weights" / "baseline-v1.pt"
DIAMETER_MM = 10.0


def plant_nodule(seed: int = 11, hu: float = 40.0):
    """A 'small' phantom without nodules plus a 10 mm ball (partial-volume edges) deep in a lung.

    Returns (Volume, centre_xyz_mm)."""
    ph = generate_phantom(PhantomConfig.preset("small", n_nodules_range=(0, 0)), seed=seed)
    free = ph.tissue == TISSUE_LABELS["lung"]
    depth_mm = ndimage.distance_transform_edt(free, sampling=ph.spacing_zyx_mm)
    k = np.unravel_index(np.argmax(depth_mm), depth_mm.shape)
    centre = ph.voxel_to_patient(np.asarray(k, float) + 0.3)
    image = ph.hu.astype(np.float32)
    sub = 3                                                  # 3x3x3 supersampling for partial volume
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1).astype(float)
    frac = np.zeros(image.shape, np.float32)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                pts = ph.voxel_to_patient(grid + [dz, dy, dx])
                frac += (np.linalg.norm(pts - centre, axis=-1) <= DIAMETER_MM / 2) / sub ** 3
    image = image * (1 - frac) + hu * frac
    return Volume(image.astype(np.float32), ph.spacing_zyx_mm, ph.origin_xyz_mm, ph.direction), centre


@pytest.fixture(scope="module")
def predictor():
    if not WEIGHTS.exists():
        pytest.skip("shipped weights missing: run python -m ml.train")
    torch.set_num_threads(2)
    return Predictor.from_checkpoint(WEIGHTS, device="cpu")


@pytest.fixture(scope="module")
def planted():
    return plant_nodule()


def _best(pred, centre):
    assert pred.findings, "no findings"
    return min(pred.findings, key=lambda f: np.linalg.norm(np.asarray(f.centre_xyz_mm) - centre))


def test_the_shipped_model_describes_itself(predictor):
    assert predictor.device.type == "cpu" and predictor.version.startswith("baseline-v1")
    meta = predictor.metadata
    assert meta["preprocessing"]["hu_min"] == -1000.0
    assert meta["networks"]["detector"]["config"]["out_channels"] == 5
    assert meta["training"]["data"]["cases"] > 0


def test_a_planted_nodule_is_found_where_it_is_with_its_size(predictor, planted):
    volume, centre = planted
    seen = []
    pred = predictor.predict(volume, progress=lambda f, s: seen.append((f, s)))
    f = _best(pred, centre)
    assert np.linalg.norm(np.asarray(f.centre_xyz_mm) - centre) < 1.5
    assert f.diameter_mm == pytest.approx(DIAMETER_MM, abs=1.5)
    assert f.volume_ml == pytest.approx(np.pi / 6 * DIAMETER_MM ** 3 / 1000, rel=0.35)
    assert f.long_axis_mm >= f.short_axis_mm > 0.5 * DIAMETER_MM
    assert f.score > 0.5 and f.uncertainty is None and pred.case_uncertainty is None
    assert all(lo < c < hi for lo, c, hi in zip(f.bbox_min_xyz_mm, f.centre_xyz_mm, f.bbox_max_xyz_mm))
    assert f.mask.dtype == bool and f.mask.any()
    assert all(0 <= o and o + n <= s for o, n, s in zip(f.mask_origin_zyx, f.mask.shape, volume.shape))
    assert seen[-1] == (1.0, "done") and {"total", "detector_net", "segmenter_net", "detect", "segment"} <= set(pred.timings)
    # mean over the mask includes partial-volume edge voxels (lung ~ -860 HU mixed in): well above lung, below 40
    assert -400 < f.mean_hu < 40


def test_a_flipped_volume_gives_the_same_patient_position(predictor, planted):
    volume, centre = planted
    flipped = np.diag([1.0, 1.0, -1.0])                      # slices stored head first
    top = volume.voxel_to_patient([volume.shape[0] - 1, 0, 0])
    reversed_volume = Volume(volume.hu[::-1].copy(), volume.spacing_zyx_mm, tuple(top), volume.direction @ flipped)
    f = _best(predictor.predict(reversed_volume), centre)
    assert np.linalg.norm(np.asarray(f.centre_xyz_mm) - centre) < 1.5
    assert f.diameter_mm == pytest.approx(DIAMETER_MM, abs=1.5)


def test_tta_gives_uncertainties_between_zero_and_one(predictor, planted):
    volume, centre = planted
    pred = predictor.predict(volume, tta=True)
    f = _best(pred, centre)
    assert 0.0 <= f.uncertainty <= 1.0 and 0.0 <= pred.case_uncertainty <= 1.0
    assert f.uncertainty < 0.5


def test_detector_tta_averages_flipped_heat_maps_without_segmenter_tta(predictor, planted, monkeypatch):
    import ml.inference.predictor as module
    volume, centre = planted
    calls = []
    real = module.sliding_window
    monkeypatch.setattr(module, "sliding_window", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setitem(predictor.settings, "det_tta", 4)
    pred = predictor.predict(volume)
    assert len(calls) == 4                                   # identity + 3 flips of the detection grid
    f = _best(pred, centre)
    assert np.linalg.norm(np.asarray(f.centre_xyz_mm) - centre) < 1.5
    assert f.diameter_mm == pytest.approx(DIAMETER_MM, abs=1.5)
    assert f.score > 0.5 and f.uncertainty is None and pred.case_uncertainty is None


def test_sliding_window_blending_reproduces_a_pointwise_function():
    image = np.random.default_rng(0).normal(size=(1, 21, 30, 17)).astype(np.float32)
    out = sliding_window(image, lambda x: torch.cat([2 * x, x + 1], dim=1), 8, overlap=0.5, batch_size=3, divisor=4)
    assert out.shape == (2, 21, 30, 17)
    np.testing.assert_allclose(out[0], 2 * image[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], image[0] + 1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [(False, False, False, 1), (True, False, True, 3), (True, True, True, 2)])
def test_transforms_move_points_with_the_array_and_invert(t):
    a = np.zeros((5, 6, 7))
    pts = np.array([[1, 2, 3], [4, 5, 0]])
    a[tuple(pts.T)] = 1
    b = apply_array(a, t)
    moved = np.rint(apply_points(pts, a.shape, t)).astype(int)
    assert b[tuple(moved.T)].tolist() == [1, 1]
    np.testing.assert_array_equal(invert_array(b, t), a)
