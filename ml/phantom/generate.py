"""``generate_phantom(cfg, seed)``: the whole pipeline, deterministic for (cfg, seed).

Stages (each with its own child random stream, so that changing one stage's draws
does not shift the others): acquisition -> anatomy -> vessels -> nodules -> noise.
"""
from __future__ import annotations

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
    tissue = np.zeros(acq.shape_zyx, np.uint8)
    landmarks = paint_anatomy(tissue, grid, chest)
    lung = tissue == T["lung"]
    t1 = time.perf_counter()

    vessels = grow_vessels(lung, grid, landmarks["hila_xyz_mm"], chest.xb, cfg.vessel_leaves_per_tree, rng_vessel)
    lut = np.array([hu[name] for name in sorted(T, key=T.get)], np.float32)
    img = lut[tissue]
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
    acquisition = {k: v for k, v in acq.__dict__.items()}
    acquisition.update(psf_sigma_vox_zyx=list(sigma), tissue_hu=hu, lung_gradient_hu=round(gradient_hu, 2))
    return Phantom(
        hu=hu_volume, spacing_zyx_mm=tuple(float(v) for v in acq.spacing_zyx_mm),
        origin_xyz_mm=tuple(float(v) for v in acq.origin_xyz_mm), direction=np.eye(3),
        label_mask=label, lung_mask=lung, lesions=lesions, seed=int(seed), config=cfg,
        slice_thickness_mm=float(acq.slice_thickness_mm), tissue=tissue, vessels=vessels,
        acquisition=acquisition, anatomy=chest.to_dict())
