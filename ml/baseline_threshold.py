"""Trivial sanity baseline: HU threshold inside the lungs + connected blobs, scored by compactness.

If this scores close to the networks, the phantoms are too easy (DATA-NOTES). Works at 2 mm.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .preprocessing import lung_box
from .volumes import Volume, resample

SPACING_MM = 2.0
TISSUE_HU = -500.0


def _lung_interior(hu: np.ndarray) -> np.ndarray:
    """Lungs (air not connected to the in-plane border) with their holes (vessels, nodules) filled per slice."""
    air = hu < -400
    labels, n = ndimage.label(air)
    border = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()]))
    lung = air & ~np.isin(labels, border)
    return np.stack([ndimage.binary_fill_holes(s) for s in lung])


def threshold_detect(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates on ``volume``: (centres (N, 3) patient mm, scores (N,) in [0, 1], diameters (N,) mm).

    Score = compactness = blob volume / volume of the sphere spanning its largest extent (1 for a ball,
    small for a vessel segment).
    """
    start, stop = lung_box(volume)
    det = resample(volume.crop(start, stop), (SPACING_MM,) * 3)
    blobs = (det.hu > TISSUE_HU) & _lung_interior(det.hu)
    labels, n = ndimage.label(blobs)
    centres, scores, diameters = [], [], []
    voxel_ml = det.voxel_volume_ml
    for i, sl in enumerate(ndimage.find_objects(labels), 1):
        comp = labels[sl] == i
        vol_mm3 = comp.sum() * voxel_ml * 1000
        d = (6 * vol_mm3 / np.pi) ** (1 / 3)
        if not 3.0 <= d <= 32.0:
            continue
        extent = max(s.stop - s.start for s in sl) * SPACING_MM
        scores.append(float(min(1.0, vol_mm3 / (np.pi / 6 * extent ** 3))))
        centres.append(det.voxel_to_patient(np.argwhere(comp).mean(0) + [s.start for s in sl]))
        diameters.append(d)
    return np.asarray(centres).reshape(-1, 3), np.asarray(scores), np.asarray(diameters)
