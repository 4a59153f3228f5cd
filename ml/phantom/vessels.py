"""Pulmonary vessel trees: space-filling branching tubes from the hila into each lung.

A tree is built top-down over random target points inside one lung: a branch runs
from its parent's end part of the way towards the centroid of its points, then the
points are split in two along their main axis and each half gets a child branch.
Radii follow a Murray-like law, r = r_leaf * n_points ** (1 / 2.3), so vessels taper
from the hilum to sub-millimetre leaves. Segments are stored as float32 rows
``x0 y0 z0 x1 y1 z1 r0 r1`` (patient mm) and rasterised with partial-volume occupancy:
cut axially they give the small round blobs that are the natural false positives.
"""
from __future__ import annotations

import numpy as np

from .shapes import Grid, tube_occupancy

MURRAY_EXPONENT = 2.3
MAX_PIECE_MM = 8.0


def sample_lung_points(lung: np.ndarray, grid: Grid, side_mask_x: np.ndarray, n: int,
                       rng: np.random.Generator) -> np.ndarray:
    """``n`` random points (n, 3) xyz mm inside ``lung`` restricted to columns ``side_mask_x`` (X,)."""
    step = max(1, int(round(2.0 / grid.spacing_zyx_mm[1])))
    zstep = max(1, int(round(2.0 / grid.spacing_zyx_mm[0])))
    coarse = lung[::zstep, ::step, ::step] & side_mask_x[::step][None, None, :]
    idx = np.flatnonzero(coarse)
    if idx.size == 0:
        return np.zeros((0, 3))
    pick = rng.choice(idx, size=min(n, idx.size), replace=False)
    kz, ky, kx = np.unravel_index(pick, coarse.shape)
    dz, dy, dx = grid.spacing_zyx_mm
    ox, oy, oz = grid.origin_xyz_mm
    jitter = rng.uniform(-0.5, 0.5, size=(pick.size, 3)) * np.array([dx * step, dy * step, dz * zstep])
    return np.stack([ox + kx * step * dx, oy + ky * step * dy, oz + kz * zstep * dz], axis=1) + jitter


def build_tree(root_xyz, points: np.ndarray, r_leaf_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Segments (M, 8) of a tree from ``root_xyz`` reaching every point of ``points`` (N, 3)."""
    segments = []
    stack = [(np.asarray(root_xyz, float), points)]
    while stack:
        start, pts = stack.pop()
        n = len(pts)
        radius = r_leaf_mm * n ** (1.0 / MURRAY_EXPONENT)
        if n == 1:
            segments.append((*start, *pts[0], radius, radius))
            continue
        centroid = pts.mean(axis=0)
        end = start + rng.uniform(0.35, 0.6) * (centroid - start)
        segments.append((*start, *end, radius, radius))
        centred = pts - centroid
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        proj = centred @ axis
        cut = np.quantile(proj, rng.uniform(0.3, 0.7))
        left = proj <= cut
        if left.all() or not left.any():
            left = proj <= np.median(proj)
            if left.all():
                left[np.argmax(proj)] = False
        stack.append((end, pts[left]))
        stack.append((end, pts[~left]))
    return np.asarray(segments, dtype=np.float32).reshape(-1, 8)


def split_long_segments(segments: np.ndarray, max_len_mm: float = MAX_PIECE_MM) -> np.ndarray:
    """Cut segments into pieces no longer than ``max_len_mm`` (small boxes rasterise faster)."""
    pieces = []
    for seg in segments:
        p0, p1, r0, r1 = seg[:3], seg[3:6], seg[6], seg[7]
        k = max(1, int(np.ceil(np.linalg.norm(p1 - p0) / max_len_mm)))
        t = np.linspace(0.0, 1.0, k + 1)
        for a, b in zip(t[:-1], t[1:]):
            pieces.append((*(p0 + a * (p1 - p0)), *(p0 + b * (p1 - p0)), r0 + a * (r1 - r0), r0 + b * (r1 - r0)))
    return np.asarray(pieces, dtype=np.float32).reshape(-1, 8)


def rasterise(segments: np.ndarray, grid: Grid, box_zyx: tuple[slice, slice, slice]) -> np.ndarray:
    """Max-combined occupancy (float32, shape of ``box_zyx``) of all segments within that box."""
    shape = tuple(s.stop - s.start for s in box_zyx)
    occ = np.zeros(shape, np.float32)
    for seg in split_long_segments(segments):
        res = tube_occupancy(seg[:3], seg[3:6], float(seg[6]), float(seg[7]), grid)
        if res is None:
            continue
        box, o = res
        local = []
        src = []
        for b, outer, n in zip(box, box_zyx, o.shape):
            lo = max(b.start, outer.start)
            hi = min(b.stop, outer.stop)
            if hi <= lo:
                break
            local.append(slice(lo - outer.start, hi - outer.start))
            src.append(slice(lo - b.start, hi - b.start))
        else:
            target = occ[tuple(local)]
            np.maximum(target, o[tuple(src)], out=target)
    return occ


def grow_vessels(lung: np.ndarray, grid: Grid, hila_xyz, x_mid: float, leaves_per_tree: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Artery and vein trees for both lungs. Returns segments (M, 8) float32, patient mm."""
    dx = grid.spacing_zyx_mm[2]
    x = grid.origin_xyz_mm[0] + dx * np.arange(grid.shape_zyx[2])
    r_leaf = max(0.45, 0.3 * grid.spacing_zyx_mm[1])
    trees = []
    for hilum, side in zip(hila_xyz, (x < x_mid, x >= x_mid)):
        for offset_mm in ((0.0, 0.0, 0.0), (0.0, 8.0, -25.0)):      # artery at the hilum, vein lower
            pts = sample_lung_points(lung, grid, side, leaves_per_tree, rng)
            if len(pts) == 0:
                continue
            scale = np.ptp(pts, axis=0).max() / 250.0                # offsets shrink with small chests
            root = np.asarray(hilum) + np.asarray(offset_mm) * min(1.0, scale * 1.6)
            trees.append(build_tree(root, pts, r_leaf, rng))
    if not trees:
        return np.zeros((0, 8), np.float32)
    return np.concatenate(trees)
