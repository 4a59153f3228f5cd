"""Measurements of one nodule mask in patient space (mm, mL, HU) -- never in voxels."""
from __future__ import annotations

import numpy as np

from ..volumes import Volume


def mask_points_mm(mask: np.ndarray, origin_zyx, volume: Volume) -> np.ndarray:
    """Patient LPS mm (N, 3) of the voxel centres of ``mask`` (a sub-box at ``origin_zyx`` of ``volume``)."""
    return volume.voxel_to_patient(np.argwhere(mask) + np.asarray(origin_zyx))


def _voxel_extent_mm(u: np.ndarray, volume: Volume) -> float:
    """Length (mm) of one voxel along the patient-space unit vector ``u``."""
    in_axes = np.abs(volume.direction.T @ u)            # components along the x, y, z voxel axes
    return float(in_axes @ np.asarray(volume.spacing_zyx_mm)[::-1])


def measure(mask: np.ndarray, origin_zyx, volume: Volume) -> dict:
    """Volume (mL), equivalent-sphere diameter, mean HU, centroid, bounding box, long/short axes.

    ``mask`` bool (z, y, x) sub-box of ``volume`` starting at voxel ``origin_zyx``. Axes: principal
    axes of the voxel-centre cloud in patient mm; long axis = extent along the first, short axis =
    extent along the second (the largest perpendicular extent), each plus one voxel length.
    """
    n = int(mask.sum())
    if n == 0:
        raise ValueError("empty mask")
    pts = mask_points_mm(mask, origin_zyx, volume)
    volume_ml = n * volume.voxel_volume_ml
    diameter = float((6.0 * volume_ml * 1000.0 / np.pi) ** (1.0 / 3.0))
    o = np.asarray(origin_zyx)
    sub = volume.hu[o[0]:o[0] + mask.shape[0], o[1]:o[1] + mask.shape[1], o[2]:o[2] + mask.shape[2]]
    half = np.abs(volume.direction) @ (np.asarray(volume.spacing_zyx_mm)[::-1] / 2)   # half-voxel in x, y, z
    centred = pts - pts.mean(0)
    if n >= 3:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        vt = np.eye(3)
    extents = [float(np.ptp(centred @ u)) + _voxel_extent_mm(u, volume) for u in vt[:2]]
    return {"volume_ml": float(volume_ml), "diameter_mm": diameter, "mean_hu": float(sub[mask].mean()),
            "centre_xyz_mm": tuple(float(v) for v in pts.mean(0)),
            "bbox_min_xyz_mm": tuple(float(v) for v in pts.min(0) - half),
            "bbox_max_xyz_mm": tuple(float(v) for v in pts.max(0) + half),
            "long_axis_mm": max(extents), "short_axis_mm": min(extents)}


def sphere_mask(volume: Volume, centre_xyz_mm, diameter_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A ball of ``diameter_mm`` around a patient point on ``volume``'s grid: (mask sub-box, origin_zyx)."""
    c = volume.patient_to_voxel(np.asarray(centre_xyz_mm, float))
    r_vox = diameter_mm / 2 / np.asarray(volume.spacing_zyx_mm)
    lo = np.clip(np.floor(c - r_vox).astype(int), 0, volume.shape)
    hi = np.clip(np.ceil(c + r_vox).astype(int) + 1, lo, volume.shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    pts = volume.voxel_to_patient(grid)
    mask = np.linalg.norm(pts - np.asarray(centre_xyz_mm), axis=-1) <= diameter_mm / 2
    if not mask.any():   # smaller than a voxel: keep the nearest voxel
        mask = np.zeros(hi - lo, bool)
        mask[tuple(np.clip(np.rint(c).astype(int) - lo, 0, np.maximum(hi - lo - 1, 0)))] = True
    return mask, lo
