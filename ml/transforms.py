"""Flips and in-plane 90-degree rotations of (..., Z, Y, X) arrays and of (N, 3) voxel points.

Used for training augmentation and for test-time augmentation (with :func:`invert_array`).
A transform is ``(flip_z, flip_y, flip_x, k)``: flips first, then ``np.rot90(k, axes=(-2, -1))``.
"""
from __future__ import annotations

import numpy as np

Transform = tuple[bool, bool, bool, int]
IDENTITY: Transform = (False, False, False, 0)


def random_transform(rng: np.random.Generator) -> Transform:
    flips = rng.random(3) < 0.5
    return (bool(flips[0]), bool(flips[1]), bool(flips[2]), int(rng.integers(4)))


def tta_transforms(n: int) -> list[Transform]:
    """The first ``n`` of a fixed list of test-time transforms (identity first)."""
    table = [IDENTITY, (False, False, True, 0), (False, True, False, 0), (True, False, False, 0),
             (False, False, False, 1), (False, False, False, 2), (False, False, False, 3), (True, True, True, 1)]
    return table[:max(1, min(n, len(table)))]


def apply_array(a: np.ndarray, t: Transform) -> np.ndarray:
    """Transform the last three axes (Z, Y, X) of ``a``."""
    for axis, flip in zip((-3, -2, -1), t[:3]):
        if flip:
            a = np.flip(a, axis=axis)
    return np.ascontiguousarray(np.rot90(a, t[3], axes=(-2, -1)))


def invert_array(a: np.ndarray, t: Transform) -> np.ndarray:
    """Inverse of :func:`apply_array` (for TTA outputs)."""
    a = np.rot90(a, -t[3], axes=(-2, -1))
    for axis, flip in zip((-3, -2, -1), t[:3]):
        if flip:
            a = np.flip(a, axis=axis)
    return np.ascontiguousarray(a)


def apply_points(p: np.ndarray, shape_zyx, t: Transform) -> np.ndarray:
    """Continuous voxel points ``(N, 3)`` (z, y, x) in an array of ``shape_zyx`` -> their transformed place."""
    p = np.array(p, dtype=float).reshape(-1, 3)
    nz, ny, nx = shape_zyx
    for axis, n, flip in zip(range(3), (nz, ny, nx), t[:3]):
        if flip:
            p[:, axis] = n - 1 - p[:, axis]
    for _ in range(t[3] % 4):  # np.rot90 k=1 on (Y, X): new[i, j] = old[j, nx - 1 - i]
        y, x = p[:, 1].copy(), p[:, 2].copy()
        p[:, 1], p[:, 2] = nx - 1 - x, y
        ny, nx = nx, ny
    return p
