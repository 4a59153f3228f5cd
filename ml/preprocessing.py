"""Fixed input normalisation and the cheap lung crop used before detection.

Normalisation is fixed for the whole data set (never per image or per batch):
``clip(hu, HU_MIN, HU_MAX)`` then ``(hu - HU_CENTRE) / HU_SCALE``, which maps [-1000, 400] HU
to [-1, 1]. The constants travel inside every checkpoint (``preprocessing_constants()``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .volumes import Volume

HU_MIN, HU_MAX = -1000.0, 400.0
HU_CENTRE, HU_SCALE = -300.0, 700.0
LUNG_THRESHOLD_HU = -400.0
LUNG_MARGIN_MM = 10.0
LUNG_MIN_ML = 20.0


def normalise_hu(hu: np.ndarray) -> np.ndarray:
    """HU array (any shape) -> float32 network input in [-1, 1]."""
    return ((np.clip(hu.astype(np.float32, copy=False), HU_MIN, HU_MAX) - HU_CENTRE) / HU_SCALE).astype(np.float32)


def preprocessing_constants() -> dict:
    return {"hu_min": HU_MIN, "hu_max": HU_MAX, "hu_centre": HU_CENTRE, "hu_scale": HU_SCALE,
            "lung_threshold_hu": LUNG_THRESHOLD_HU, "lung_margin_mm": LUNG_MARGIN_MM}


def coarse_lung_mask(hu: np.ndarray, step_zyx: tuple[int, int, int], voxel_ml: float) -> np.ndarray:
    """Lung mask on ``hu[::sz, ::sy, ::sx]``: air (< -400 HU) not connected to the in-plane border.

    ``voxel_ml``: volume of one *strided* voxel. Components smaller than ``LUNG_MIN_ML`` are dropped.
    """
    sz, sy, sx = step_zyx
    air = hu[::sz, ::sy, ::sx] < LUNG_THRESHOLD_HU                # (Z', Y', X')
    labels, n = ndimage.label(air)
    if n == 0:
        return air
    border = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(n + 1)) * voxel_ml
    keep = sizes >= LUNG_MIN_ML
    keep[border] = False
    keep[0] = False
    return keep[labels]


def lung_box(volume: Volume, coarse_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Voxel box ``(start_zyx, stop_zyx)`` of the lungs plus a 10 mm margin on ``volume``'s grid.

    Works on a strided copy (~``coarse_mm`` voxels) so it costs well under a second on a full CT.
    Falls back to the whole volume when no lung is found.
    """
    spacing = np.asarray(volume.spacing_zyx_mm)
    step = np.maximum(1, np.round(coarse_mm / spacing)).astype(int)
    mask = coarse_lung_mask(volume.hu, tuple(step), float(np.prod(step * spacing)) / 1000.0)
    shape = np.asarray(volume.shape)
    if not mask.any():
        return np.zeros(3, int), shape
    idx = np.argwhere(mask)
    margin = np.ceil(LUNG_MARGIN_MM / spacing).astype(int)
    start = np.maximum(idx.min(0) * step - margin, 0)
    stop = np.minimum((idx.max(0) + 1) * step + margin, shape)
    return start, stop
