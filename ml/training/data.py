"""Training data: phantoms -> cached cases at network spacing, and patch samplers with augmentation.

A cached *case* (one phantom) holds
  ``det_hu``     int16 (Z, Y, X): the lung box resampled to ``DET_SPACING_MM`` isotropic,
  ``lesions``    float32 (N, 4): centre (z, y, x) in det voxels, diameter in mm,
  ``lesion_texture`` / ``lesion_attached`` str (N,): the phantom's texture and attachment ("" = free),
  ``vessel_zyx`` / ``lung_zyx`` int16 (M, 3): det voxels for hard-negative / random patch centres,
  ``seg_hu``     int16 (K, S, S, S) and ``seg_label`` bool: ``SEG_CACHE`` mm cubes at ``SEG_SPACING_MM``
                 centred on each lesion (and on one vessel voxel far from any lesion).
Cases are stored as ``.npz`` under a cache folder, so phantoms are generated once.

Training seeds: small presets use ``TRAIN_SEED_SMALL + i``, full presets ``TRAIN_SEED_FULL + i``;
evaluation uses seeds from ``ml.evaluate.TEST_SEED_BASE`` (disjoint ranges).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..phantom import TISSUE_LABELS, PhantomConfig, generate_phantom
from ..preprocessing import lung_box
from ..volumes import Volume, resample, resample_array

log = logging.getLogger(__name__)

DET_SPACING_MM = 2.0
SEG_SPACING_MM = 1.0
SEG_CACHE = 64              # cached seg cube edge (voxels); training crops SEG_PATCH from it
TRAIN_SEED_SMALL = 10_000
TRAIN_SEED_FULL = 20_000
N_SAMPLE_POINTS = 3000
CACHE_FORMAT = 2            # part of a cached case's file name: bump when build_case's output changes


def seg_cube(volume: Volume, centre_xyz_mm, size: int, spacing_mm: float = SEG_SPACING_MM,
             source: np.ndarray | None = None, order: int = 1, cval: float = -1024.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample a ``size``^3 cube at ``spacing_mm`` centred on a patient point from ``volume``'s grid.

    Returns ``(cube (S, S, S) float32, offset_zyx)`` where ``offset_zyx`` is the continuous source
    voxel of cube voxel (0, 0, 0); cube voxel ``j`` lies at source voxel ``offset + j * spacing / src``.
    ``source`` defaults to ``volume.hu`` (pass a mask to resample a label on the same grid).
    """
    src = volume.hu if source is None else source
    centre = volume.patient_to_voxel(np.asarray(centre_xyz_mm, float))
    scale = spacing_mm / np.asarray(volume.spacing_zyx_mm)
    offset = centre - (size - 1) / 2.0 * scale
    cube = resample_array(src, volume.spacing_zyx_mm, (spacing_mm,) * 3, (size,) * 3, offset_zyx=offset,
                          order=order, cval=cval)
    return cube, offset


def _sample_points(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = np.argwhere(mask)
    if len(idx) > N_SAMPLE_POINTS:
        idx = idx[rng.choice(len(idx), N_SAMPLE_POINTS, replace=False)]
    return idx.astype(np.int16)


def _seg_items(ph, volume: Volume, det_vessels_mm: np.ndarray, rng) -> tuple[list, list]:
    lesion_any = (ph.label_mask > 0).astype(np.float32)
    centres = [np.asarray(les.centre_xyz_mm) for les in ph.lesions]
    if len(det_vessels_mm):   # one hard negative: a vessel point > 15 mm from every lesion
        far = [p for p in det_vessels_mm[rng.permutation(len(det_vessels_mm))[:50]]
               if all(np.linalg.norm(p - c) > 15.0 for c in centres)]
        centres += far[:1]
    hus, labels = [], []
    for c in centres:
        hu, _ = seg_cube(volume, c, SEG_CACHE)
        lab, _ = seg_cube(volume, c, SEG_CACHE, source=lesion_any, cval=0.0)
        hus.append(np.rint(hu).astype(np.int16))
        labels.append(lab >= 0.5)
    return hus, labels


def build_case(preset: str, seed: int) -> dict:
    """Generate one phantom and turn it into a cached case dict (see the module docstring)."""
    ph = generate_phantom(PhantomConfig.preset(preset), seed=seed)
    rng = np.random.default_rng([seed, 7])
    volume = Volume.from_phantom(ph)
    start, stop = lung_box(volume)
    det = resample(volume.crop(start, stop), (DET_SPACING_MM,) * 3)
    tissue = Volume(ph.tissue[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]], volume.spacing_zyx_mm)
    tissue_det = resample_array(tissue.hu, tissue.spacing_zyx_mm, (DET_SPACING_MM,) * 3, det.shape, order=0,
                                dtype=np.uint8)
    vessels = _sample_points(tissue_det == TISSUE_LABELS["vessel"], rng)
    lung = _sample_points((tissue_det == TISSUE_LABELS["lung"]) | (tissue_det == TISSUE_LABELS["vessel"]), rng)
    lesions = np.array([[*det.patient_to_voxel(les.centre_xyz_mm), les.diameter_mm] for les in ph.lesions],
                       np.float32).reshape(-1, 4)
    seg_hu, seg_label = _seg_items(ph, volume, det.voxel_to_patient(vessels.astype(float)), rng)
    return {"det_hu": np.rint(det.hu).astype(np.int16), "lesions": lesions, "vessel_zyx": vessels,
            "lung_zyx": lung, "lesion_texture": np.array([les.texture for les in ph.lesions], dtype="U16"),
            "lesion_attached": np.array([les.attached_to or "" for les in ph.lesions], dtype="U16"),
            "seg_hu": np.array(seg_hu, np.int16).reshape(-1, *(SEG_CACHE,) * 3),
            "seg_label": np.array(seg_label, bool).reshape(-1, *(SEG_CACHE,) * 3),
            "seg_is_lesion": np.arange(len(seg_hu)) < len(ph.lesions),
            "seed": np.int64(seed), "preset": np.array(preset)}


def _build_to_file(args) -> str:
    preset, seed, path = args
    if not Path(path).exists():
        case = build_case(preset, seed)
        tmp = Path(str(path) + ".tmp.npz")
        np.savez_compressed(tmp, **case)
        tmp.rename(path)
    return str(path)


def build_cache(cache_dir, plan: list[tuple[str, int]], workers: int = 1) -> list[Path]:
    """Build (or reuse) one ``.npz`` per ``(preset, seed)`` in ``cache_dir``; returns the paths."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(preset, seed, cache / f"{preset}-{seed}.v{CACHE_FORMAT}.npz") for preset, seed in plan]
    if workers > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(workers) as pool:
            for i, _ in enumerate(pool.imap(_build_to_file, jobs), 1):
                if i % 20 == 0 or i == len(jobs):
                    log.info("cache: %d/%d cases", i, len(jobs))
    else:
        for i, job in enumerate(jobs, 1):
            _build_to_file(job)
            if i % 20 == 0 or i == len(jobs):
                log.info("cache: %d/%d cases", i, len(jobs))
    return [j[2] for j in jobs]


def load_cases(paths) -> list[dict]:
    cases = []
    for p in paths:
        with np.load(p) as z:
            cases.append({k: z[k] for k in z.files})
    return cases


def training_plan(n_small: int, n_full: int) -> list[tuple[str, int]]:
    """The phantom (preset, seed) list of a training run (interleaved so partial caches are mixed)."""
    plan = [("full", TRAIN_SEED_FULL + i) for i in range(n_full)]
    plan += [("small", TRAIN_SEED_SMALL + i) for i in range(n_small)]
    return plan
