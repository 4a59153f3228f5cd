"""``generate_phantom(cfg, seed)``: the whole pipeline, deterministic for (cfg, seed).

Stages (each with its own child random stream, so that changing one stage's draws
does not shift the others): acquisition -> anatomy -> vessels -> nodules -> noise.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from .acquisition import acquire, psf_sigma_vox
from .anatomy import draw_chest, paint_anatomy
from .config import PhantomConfig, sample_acquisition
from .nodules import Scene, place_nodules
from .phantom import TISSUE_LABELS as T
from .phantom import Phantom
from .shapes import Grid
from .vessels import grow_vessels, rasterise

log = logging.getLogger(__name__)


def draw_tissue_hu(rng: np.random.Generator, contrast: bool) -> dict[str, float]:
    """Per-scan HU of every tissue class (noise-free, before blur)."""
    blood = rng.uniform(150.0, 300.0) if contrast else rng.uniform(30.0, 50.0)
    hu = {
        "air": -1000.0, "fat": rng.uniform(-120.0, -80.0), "muscle": rng.uniform(35.0, 55.0),
        "soft_tissue": rng.uniform(25.0, 45.0), "lung": rng.uniform(-885.0, -845.0), "vessel": blood,
        "blood": blood, "liver": rng.uniform(50.0, 65.0) + (40.0 if contrast else 0.0),
        "bone_cortical": rng.uniform(700.0, 1000.0), "bone_cancellous": rng.uniform(200.0, 350.0),
        "disc": rng.uniform(70.0, 100.0), "csf": rng.uniform(5.0, 20.0), "airway": rng.uniform(-1000.0, -985.0),
        "table": rng.uniform(50.0, 200.0), "lesion": 0.0,
    }
    return {k: round(float(v), 2) for k, v in hu.items()}


def _lung_box(lung: np.ndarray) -> tuple[slice, slice, slice] | None:
    if not lung.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(lung.any(axis=other))
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def _band_values(tissue: np.ndarray, lut: np.ndarray, band, idx: np.ndarray) -> np.ndarray:
    """HU at flat voxel indices ``idx`` (sorted, unique) of one anatomy sample, lung band blended.

    Where a slab cuts the diaphragm or an apex the lung is mixed with what lies beyond
    by its slab fraction; structures painted after the lungs keep their own value.
    """
    values = lut[tissue.reshape(-1)[idx]]
    band_idx, frac, under = band
    pos = np.searchsorted(idx, band_idx)
    hit = pos < idx.size
    hit[hit] = idx[pos[hit]] == band_idx[hit]
    now = tissue.reshape(-1)[band_idx]
    ok = hit & ((now == T["lung"]) | (now == under))
    values[pos[ok]] = frac[ok] * lut[T["lung"]] + (1.0 - frac[ok]) * lut[under[ok]]
    return values


def _paint_lung_and_vessels(img, tissue, lung, grid: Grid, vessels, hu: dict, gradient_hu: float, chest) -> None:
    """Posterior-denser parenchyma, then vessels blended with their occupancy, inside the lungs only."""
    box = _lung_box(lung)
    if box is None:
        return
    sub, lung_sub = img[box], lung[box]
    y = grid.origin_xyz_mm[1] + grid.spacing_zyx_mm[1] * np.arange(box[1].start, box[1].stop)
    ramp = (gradient_hu * np.clip((y - chest.yb) / chest.b_cav * 0.5 + 0.5, 0, 1)).astype(np.float32)
    sub += lung_sub * ramp[None, :, None]
    occ = rasterise(vessels, grid, box)
    occ *= lung_sub
    sub += occ * (np.float32(hu["vessel"]) - sub)
    tissue[box][(occ >= 0.5) & lung_sub] = T["vessel"]


def _anatomy_image(grid: Grid, chest, hu: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """Noise-free anatomy image (float32 HU), tissue map (uint8) and landmarks, all (Z, Y, X).

    The anatomy is painted at up to 3 positions across each slab and the HU averaged
    (the slice-thickness partial volume of the heart, ribs, arch...). The tissue map and
    landmarks are those of the slab centres; off-centre samples only contribute where
    they differ from the centre, so each costs one painting and a sparse update.
    """
    k = min(grid.n_sub, 3)
    lut = np.array([hu[name] for name in sorted(T, key=T.get)], np.float32)
    ox, oy, oz = grid.origin_xyz_mm
    samples = []
    for offset in (np.arange(k) - (k - 1) / 2) * (grid.slab_mm / k):
        sub_grid = Grid(grid.shape_zyx, grid.spacing_zyx_mm, (ox, oy, oz + offset), grid.slab_mm / k)
        sub_tissue = np.zeros(grid.shape_zyx, np.uint8)
        samples.append((offset, sub_tissue, paint_anatomy(sub_tissue, sub_grid, chest)))
    _, tissue, landmarks = next(s for s in samples if s[0] == 0.0)
    img = lut[tissue]
    band_idx = landmarks["lung_band"][0]
    img.reshape(-1)[band_idx] = _band_values(tissue, lut, landmarks["lung_band"], band_idx)
    updates = []
    for offset, sub_tissue, sub_landmarks in samples:
        if offset == 0.0:
            continue
        idx = np.union1d(np.flatnonzero(sub_tissue != tissue), sub_landmarks["lung_band"][0])
        delta = _band_values(sub_tissue, lut, sub_landmarks["lung_band"], idx) - img.reshape(-1)[idx]
        updates.append((idx, delta))
    for idx, delta in updates:
        img.reshape(-1)[idx] += delta * np.float32(1.0 / k)
    return img, tissue, landmarks


def generate_phantom(cfg: PhantomConfig | None = None, seed: int = 0) -> Phantom:
    """Generate one synthetic chest CT with exact nodule ground truth.

    Returns a :class:`Phantom` whose ``hu`` is int16 (Z, Y, X) Hounsfield units with
    ``spacing_zyx_mm`` = (slice spacing, row spacing, column spacing) and LPS origin.
    Deterministic: the same ``cfg`` and ``seed`` give identical arrays.
    """
    cfg = cfg or PhantomConfig.preset("full")
    cfg.validate()
    t0 = time.perf_counter()
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(5)]
    rng_acq, rng_anat, rng_vessel, rng_nodule, rng_noise = streams
    acq = sample_acquisition(cfg, rng_acq)
    grid = Grid(acq.shape_zyx, acq.spacing_zyx_mm, acq.origin_xyz_mm, acq.slice_thickness_mm)

    chest = draw_chest(grid, rng_anat, cfg.body_fill_range)
    hu = draw_tissue_hu(rng_anat, acq.contrast)
    gradient_hu = float(rng_anat.uniform(10.0, 40.0))
    img, tissue, landmarks = _anatomy_image(grid, chest, hu)
    lung = tissue == T["lung"]
    t1 = time.perf_counter()

    vessels = grow_vessels(lung, grid, landmarks["hila_xyz_mm"], chest.xb, cfg.vessel_leaves_per_tree, rng_vessel)
    _paint_lung_and_vessels(img, tissue, lung, grid, vessels, hu, gradient_hu, chest)
    t2 = time.perf_counter()

    label = np.zeros(acq.shape_zyx, np.uint16)
    lesions = place_nodules(Scene(grid, img, tissue, lung, label, vessels), cfg, rng_nodule)
    t3 = time.perf_counter()

    sigma = psf_sigma_vox(acq.spacing_zyx_mm, acq.psf_fwhm_mm, acq.slice_thickness_mm)
    hu_volume = acquire(img, sigma, acq.noise_hu, rng_noise)
    del img
    t4 = time.perf_counter()
    log.debug("phantom seed=%s %s: anatomy %.2fs vessels %.2fs nodules %.2fs acquisition %.2fs",
              seed, acq.shape_zyx, t1 - t0, t2 - t1, t3 - t2, t4 - t3)
    acquisition = dataclasses.asdict(acq)
    acquisition.update(psf_sigma_vox_zyx=list(sigma), tissue_hu=hu, lung_gradient_hu=round(gradient_hu, 2))
    return Phantom(
        hu=hu_volume, spacing_zyx_mm=tuple(float(v) for v in acq.spacing_zyx_mm),
        origin_xyz_mm=tuple(float(v) for v in acq.origin_xyz_mm), direction=np.eye(3),
        label_mask=label, lung_mask=lung, lesions=lesions, seed=int(seed), config=cfg,
        slice_thickness_mm=float(acq.slice_thickness_mm), tissue=tissue, vessels=vessels,
        acquisition=acquisition, anatomy=chest.to_dict())
