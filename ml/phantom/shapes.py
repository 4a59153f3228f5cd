"""Analytic shapes rasterised with partial-volume occupancy on sub-boxes of the voxel grid.

Occupancy of a voxel = fraction of its acquisition slab (in-plane pixel x slice
thickness) inside the shape. It is approximated by averaging ``K`` (odd) sub-samples
across the slab thickness, each with a linear ramp of the signed distance over the
voxel's extent along the surface normal. The middle sub-sample is the voxel centre:
"centre inside" (signed distance <= 0) is the analytic label.

All coordinates are patient LPS mm; boxes are index slices in (z, y, x) order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape_zyx``, ``spacing_zyx_mm``, ``origin_xyz_mm``; ``slab_mm`` = slice thickness."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    slab_mm: float

    @property
    def n_sub(self) -> int:
        """Odd number of sub-samples across the slab so each is about one pixel thick."""
        k = math.ceil(self.slab_mm / min(self.spacing_zyx_mm[1:]) - 0.25)
        k = max(1, min(k, 7))
        return k if k % 2 else k + 1

    def box(self, lo_xyz, hi_xyz) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) of voxels whose centres lie in [lo, hi] (mm); None if empty."""
        out = []
        for axis, n in zip((2, 1, 0), self.shape_zyx):
            sp, o = self.spacing_zyx_mm[2 - axis], self.origin_xyz_mm[axis]
            i0 = max(0, math.ceil((lo_xyz[axis] - o) / sp))
            i1 = min(n, math.floor((hi_xyz[axis] - o) / sp) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable patient coordinates of a box: z (nz, K, 1, 1) sub-samples, y (1, 1, ny, 1), x (1, 1, 1, nx)."""
        (sz, sy, sx) = box
        dz, dy, dx = self.spacing_zyx_mm
        ox, oy, oz = self.origin_xyz_mm
        k = self.n_sub
        offsets = (np.arange(k) - (k - 1) / 2) * (self.slab_mm / k)
        z = oz + dz * np.arange(sz.start, sz.stop)[:, None] + offsets[None, :]
        y = oy + dy * np.arange(sy.start, sy.stop)
        x = ox + dx * np.arange(sx.start, sx.stop)
        f = np.float32
        return z.astype(f)[:, :, None, None], y.astype(f)[None, None, :, None], x.astype(f)[None, None, None, :]


def _ramp(signed_mm, nx, ny, nz, grid: Grid) -> np.ndarray:
    """Occupancy from signed distance (mm) and unit normal components, averaged over sub-samples.

    Returns float32 (nz, ny, nx) in [0, 1].
    """
    _, dy, dx = grid.spacing_zyx_mm
    width = np.abs(nx) * dx + np.abs(ny) * dy + np.abs(nz) * (grid.slab_mm / grid.n_sub)
    np.maximum(width, 0.5 * min(dx, dy), out=width)
    occ = np.clip(0.5 - signed_mm / width, 0.0, 1.0)
    return occ.mean(axis=1, dtype=np.float32)


def centre_sample(values: np.ndarray, grid: Grid) -> np.ndarray:
    """The middle (voxel-centre) sub-sample of a (nz, K, ny, nx) array."""
    return values[:, grid.n_sub // 2]


def tube_occupancy(p0, p1, r0: float, r1: float, grid: Grid):
    """Occupancy of a tapered capsule from ``p0`` to ``p1`` (xyz mm) with radii ``r0`` -> ``r1`` (mm).

    Returns ``(box, occ)`` with occ float32 (nz, ny, nx), or ``None`` if outside the grid.
    """
    p0 = np.asarray(p0, np.float32)
    p1 = np.asarray(p1, np.float32)
    margin = max(r0, r1) + max(grid.spacing_zyx_mm[1], grid.slab_mm)
    box = grid.box(np.minimum(p0, p1) - margin, np.maximum(p0, p1) + margin)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    e = p1 - p0
    length2 = float(e @ e) or 1e-12
    qx, qy, qz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((qx * e[0] + qy * e[1] + qz * e[2]) * (1.0 / length2), 0.0, 1.0)  # (nz, K, ny, nx)
    ux, uy, uz = qx - t * e[0], qy - t * e[1], qz - t * e[2]
    dist = np.sqrt(ux * ux + uy * uy + uz * uz)
    inv = 1.0 / np.maximum(dist, 1e-6)
    signed = dist - (r0 + t * (r1 - r0))
    return box, _ramp(signed, ux * inv, uy * inv, uz * inv, grid)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly equal-area unit vectors (n, 3): a quadrature rule for the sphere."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_QUAD = fibonacci_sphere(4096)


@dataclass(frozen=True)
class StarShape:
    """A star-shaped solid around ``origin_xyz_mm``: radius r(u) along local unit direction u.

    r(u) = ellipsoid radius (semi-axes ``semi_axes_mm``) x (1 + sum_k a_k (exp(kappa_k (u.v_k - 1)) - m_k)),
    where the lobe terms (``lobes``: rows v_x, v_y, v_z, a, kappa) make lobulated shapes and
    m_k (the lobe's mean over the sphere) keeps the mean size. ``rotation`` maps local to patient axes.
    ``scale`` shrinks the whole shape about its origin (solid core of a part-solid nodule).
    """

    origin_xyz_mm: tuple[float, float, float]
    rotation: tuple[tuple[float, ...], ...]
    semi_axes_mm: tuple[float, float, float]
    lobes: tuple[tuple[float, ...], ...] = ()
    scale: float = 1.0

    def radius(self, u0, u1, u2):
        """Radius (mm) along local unit direction components (arrays, any broadcastable shape)."""
        a, b, c = self.semi_axes_mm
        r = 1.0 / np.sqrt((u0 / a) ** 2 + (u1 / b) ** 2 + (u2 / c) ** 2)
        if self.lobes:
            bump = 1.0
            for vx, vy, vz, amp, kappa in self.lobes:
                mean = (1.0 - math.exp(-2.0 * kappa)) / (2.0 * kappa)
                bump = bump + amp * (np.exp(kappa * (u0 * vx + u1 * vy + u2 * vz - 1.0)) - mean)
            r = r * bump
        return r * self.scale

    def scaled(self, factor: float) -> "StarShape":
        return StarShape(self.origin_xyz_mm, self.rotation, self.semi_axes_mm, self.lobes, self.scale * factor)

    # -- integrals (patient frame) -----------------------------------------------------------
    def _surface_local(self) -> np.ndarray:
        r = self.radius(_QUAD[:, 0], _QUAD[:, 1], _QUAD[:, 2])
        return _QUAD * r[:, None]

    def volume_mm3(self) -> float:
        if not self.lobes:
            return 4.0 / 3.0 * math.pi * float(np.prod(self.semi_axes_mm)) * self.scale ** 3
        r = self.radius(_QUAD[:, 0], _QUAD[:, 1], _QUAD[:, 2])
        return float(4.0 * math.pi * np.mean(r ** 3) / 3.0)

    def centroid_xyz_mm(self) -> np.ndarray:
        o = np.asarray(self.origin_xyz_mm, float)
        if not self.lobes:
            return o
        r = self.radius(_QUAD[:, 0], _QUAD[:, 1], _QUAD[:, 2])
        local = math.pi * np.mean((r ** 4)[:, None] * _QUAD, axis=0) / self.volume_mm3()
        return o + np.asarray(self.rotation, float) @ local

    def bbox_xyz_mm(self) -> tuple[np.ndarray, np.ndarray]:
        o = np.asarray(self.origin_xyz_mm, float)
        rot = np.asarray(self.rotation, float)
        if not self.lobes:
            half = np.sqrt(((rot * np.asarray(self.semi_axes_mm)) ** 2).sum(axis=1)) * self.scale
            return o - half, o + half
        pts = self._surface_local() @ rot.T
        return o + pts.min(axis=0), o + pts.max(axis=0)

    def bounding_radius_mm(self) -> float:
        return float(np.linalg.norm(self._surface_local(), axis=1).max()) * 1.01

    # -- rasterisation -----------------------------------------------------------------------------
    def occupancy(self, grid: Grid, pad_mm: float = 0.0):
        """Rasterise on ``grid``: ``(box, occ, inside)`` or None.

        occ: float32 (nz, ny, nx) partial-volume fraction; inside: bool (nz, ny, nx), voxel centre in shape.
        ``pad_mm`` grows the shape by a constant distance (used for clearance checks).
        """
        o = np.asarray(self.origin_xyz_mm, np.float32)
        margin = self.bounding_radius_mm() + pad_mm + max(grid.spacing_zyx_mm[1], grid.slab_mm)
        box = grid.box(o - margin, o + margin)
        if box is None:
            return None
        z, y, x = grid.coords(box)
        dx, dy, dz = x - o[0], y - o[1], z - o[2]
        rot = np.asarray(self.rotation, np.float32)
        l0 = rot[0, 0] * dx + rot[1, 0] * dy + rot[2, 0] * dz  # local = R^T (p - o)
        l1 = rot[0, 1] * dx + rot[1, 1] * dy + rot[2, 1] * dz
        l2 = rot[0, 2] * dx + rot[1, 2] * dy + rot[2, 2] * dz
        rho = np.sqrt(l0 * l0 + l1 * l1 + l2 * l2)
        inv = 1.0 / np.maximum(rho, 1e-6)
        signed = rho - self.radius(l0 * inv, l1 * inv, l2 * inv) - pad_mm
        occ = _ramp(signed, dx * inv, dy * inv, dz * inv, grid)
        return box, occ, centre_sample(signed, grid) <= 0.0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
