"""Per-finding segmentation: a 1 mm cube around each finding -> probabilities -> mask on the ORIGINAL grid."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy import ndimage

from ..preprocessing import normalise_hu
from ..training.data import seg_cube
from ..transforms import Transform, apply_array, invert_array
from ..volumes import Volume, resample_array


def cube_probabilities(volume: Volume, centres_xyz_mm: list, predict: Callable[[torch.Tensor], torch.Tensor], *,
                       size: int, spacing_mm: float, transforms: list[Transform], device, batch_size: int = 4):
    """Probability cubes (N, T, S, S, S) for N centres under T test-time transforms, and the cube offsets (N, 3).

    ``offsets[i]``: continuous ``volume`` voxel (z, y, x) of cube voxel (0, 0, 0).
    """
    cubes, offsets = [], []
    for c in centres_xyz_mm:
        hu, off = seg_cube(volume, c, size, spacing_mm)
        cubes.append(normalise_hu(hu)), offsets.append(off)
    probs = np.zeros((len(cubes), len(transforms), size, size, size), np.float32)
    jobs = [(i, k) for i in range(len(cubes)) for k in range(len(transforms))]
    for s in range(0, len(jobs), batch_size):
        group = jobs[s:s + batch_size]
        x = np.stack([apply_array(cubes[i], transforms[k]) for i, k in group])[:, None]  # (B, 1, S, S, S)
        with torch.no_grad():
            p = torch.sigmoid(predict(torch.from_numpy(x).to(device)).float()).cpu().numpy()[:, 0]
        for (i, k), pk in zip(group, p):
            probs[i, k] = invert_array(pk, transforms[k])
    return probs, np.asarray(offsets).reshape(-1, 3)


def to_original_grid(prob: np.ndarray, offset_zyx, volume: Volume, spacing_mm: float):
    """Trilinearly map a cube of probabilities back onto ``volume``'s grid.

    Returns ``(prob_sub (z, y, x) float32, origin_zyx int)``: the sub-box of the original grid that the
    cube covers (clipped to the volume).
    """
    scale = spacing_mm / np.asarray(volume.spacing_zyx_mm)           # original voxels per cube voxel
    lo = np.clip(np.ceil(offset_zyx).astype(int), 0, volume.shape)
    hi = np.clip(np.floor(offset_zyx + (np.asarray(prob.shape) - 1) * scale).astype(int) + 1, lo, volume.shape)
    sub = resample_array(prob, (spacing_mm,) * 3, volume.spacing_zyx_mm, tuple(hi - lo),
                         offset_zyx=(lo - offset_zyx) / scale, order=1, cval=0.0)
    return sub, lo


def component_at(mask: np.ndarray, centre_zyx, max_distance_vox: float) -> np.ndarray:
    """The connected component of ``mask`` containing (or nearest to) ``centre_zyx`` (sub-box voxels).

    Empty when the nearest component is farther than ``max_distance_vox``.
    """
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    c = np.clip(np.rint(centre_zyx).astype(int), 0, np.asarray(mask.shape) - 1)
    lab = labels[tuple(c)]
    if lab == 0:
        idx = np.argwhere(labels > 0)
        d = np.linalg.norm(idx - np.asarray(centre_zyx), axis=1)
        if d.min() > max_distance_vox:
            return np.zeros_like(mask)
        lab = labels[tuple(idx[np.argmin(d)])]
    return labels == lab


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)
