"""Chest anatomy painted as tissue classes (uint8, (Z, Y, X)) on the scan grid.

The chest is drawn from a few random parameters (:class:`Chest`) and scaled to the
field of view: in-plane sizes are multiples of ``s`` (= body half-width / 160 mm,
1.0 for an average adult), craniocaudal positions are fractions ``u`` of the scan
length (0 = lowest slice, 1 = highest). Patient coordinates are LPS mm
(+x left, +y posterior, +z superior). Each painting is binary at the grid's sample
points; the generator paints up to three sub-slice grids and averages them, and the
lung's diaphragm and apex surfaces get an analytic slab fraction (``lung_band``),
so that thick slices show partial volume rather than staircases.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .phantom import TISSUE_LABELS as T
from .shapes import Grid, tube_occupancy


@dataclass(frozen=True)
class Chest:
    """Drawn anatomy parameters (mm unless noted; ``u_*`` are scan-length fractions)."""

    xb: float          # body centre x
    yb: float          # body centre y
    a_body: float      # body semi-axis, lateral
    b_body: float      # body semi-axis, antero-posterior
    p_body: float      # superellipse exponent of the outline
    t_fat: float       # subcutaneous fat thickness
    t_muscle: float    # chest wall muscle thickness
    s: float           # anatomy scale (1 = adult)
    z_low: float       # z of u = 0 (lower edge of the first slab)
    length: float      # scan length, mm
    u_apex: float      # lung apices
    u_dome_r: float    # right hemidiaphragm dome (higher than the left)
    u_dome_l: float
    dome_depth: float  # dome height above the costophrenic recesses (u)
    u_carina: float
    rib_phase: float   # 0..1, craniocaudal phase of the rib cage
    rib_drop: float    # fraction of the length the ribs descend anteriorly
    vert_phase: float
    heart_angle: float  # radians, heart long axis in the axial plane

    def z(self, u):
        return self.z_low + np.asarray(u) * self.length

    def u(self, z):
        return (np.asarray(z) - self.z_low) / self.length

    @property
    def a_cav(self) -> float:
        """Pleural cavity semi-axis (lateral), inside the ribs."""
        return self.a_body - self.t_fat - self.t_muscle - self.rib_thickness - 2.0 * self.s

    @property
    def b_cav(self) -> float:
        return self.b_body - self.t_fat - self.t_muscle - self.rib_thickness - 2.0 * self.s

    @property
    def rib_thickness(self) -> float:
        return 7.0 * self.s

    @property
    def r_vert(self) -> float:
        return 17.0 * self.s

    @property
    def y_vert(self) -> float:
        """y of the vertebral body centre (posterior midline, bulging into the cavity)."""
        return self.yb + self.b_cav - 0.8 * self.r_vert

    def to_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def draw_chest(grid: Grid, rng: np.random.Generator, fill_range: tuple[float, float]) -> Chest:
    """Draw a chest that fills ``fill_range`` of the field of view's width."""
    nz, ny, nx = grid.shape_zyx
    dz, dy, dx = grid.spacing_zyx_mm
    fov_x, fov_y = nx * dx, ny * dy
    a = 0.5 * fov_x * rng.uniform(*fill_range)
    b = min(a * rng.uniform(0.62, 0.74), 0.42 * fov_y)
    s = a / 160.0
    cx = grid.origin_xyz_mm[0] + 0.5 * (nx - 1) * dx
    cy = grid.origin_xyz_mm[1] + 0.5 * (ny - 1) * dy
    dome_r = rng.uniform(0.30, 0.36)
    u_apex = rng.uniform(0.90, 0.96)
    return Chest(
        xb=cx + rng.uniform(-0.3, 0.3) * (0.5 * fov_x - a), yb=cy - rng.uniform(0.0, 0.4) * (0.5 * fov_y - b),
        a_body=a, b_body=b, p_body=rng.uniform(2.0, 2.6), t_fat=rng.uniform(4.0, 22.0) * s,
        t_muscle=rng.uniform(7.0, 13.0) * s, s=s, z_low=grid.origin_xyz_mm[2] - 0.5 * dz, length=nz * dz,
        u_apex=u_apex, u_dome_r=dome_r, u_dome_l=dome_r - rng.uniform(0.02, 0.05),
        dome_depth=rng.uniform(0.15, 0.22), u_carina=rng.uniform(0.62, 0.70), rib_phase=rng.random(),
        rib_drop=rng.uniform(0.12, 0.2), vert_phase=rng.random(), heart_angle=rng.uniform(-0.75, -0.35))


def _superellipse(x, y, cx, cy, a, b, p=2.0):
    """Normalised radius (1 on the outline) of a superellipse; x (1, X), y (Y, 1) -> (Y, X)."""
    return (np.abs((x - cx) / a) ** p + np.abs((y - cy) / b) ** p) ** (1.0 / p)


def _paint2d(tissue: np.ndarray, zsel: np.ndarray, mask2d: np.ndarray, label: int) -> None:
    """tissue[z, mask2d] = label for the slices selected by bool ``zsel`` (Z,), one copy per run of slices."""
    ks = np.flatnonzero(zsel)
    if ks.size == 0 or not mask2d.any():
        return
    breaks = np.flatnonzero(np.diff(ks) > 1)
    starts = np.concatenate([[ks[0]], ks[breaks + 1]])
    stops = np.concatenate([ks[breaks], [ks[-1]]]) + 1
    where = mask2d[None]
    for k0, k1 in zip(starts, stops):
        np.copyto(tissue[k0:k1], label, where=where)


def paint_anatomy(tissue: np.ndarray, grid: Grid, ch: Chest) -> dict:
    """Paint every structure into ``tissue`` (uint8, (Z, Y, X)), in back-to-front order.

    Returns landmarks (hilum points, heart) for the vessel stage and the lung's
    partial-volume band (see :func:`_paint_lungs`) for the image stage.
    """
    z, y, x = _axes(grid)
    y2, x2 = y[:, None], x[None, :]
    all_z = np.ones(z.size, bool)
    _paint2d(tissue, all_z, _table_mask(y2, x2, ch), T["table"])
    body = _superellipse(x2, y2, ch.xb, ch.yb, ch.a_body, ch.b_body, ch.p_body) <= 1.0
    _paint2d(tissue, all_z, body, T["fat"])
    inner = ch.t_fat
    muscle = _superellipse(x2, y2, ch.xb, ch.yb, ch.a_body - inner, ch.b_body - inner, ch.p_body) <= 1.0
    _paint2d(tissue, all_z, muscle, T["muscle"])
    cavity = _superellipse(x2, y2, ch.xb, ch.yb, ch.a_cav, ch.b_cav) <= 1.0
    _paint2d(tissue, all_z, cavity, T["soft_tissue"])
    _paint_liver(tissue, grid, ch, cavity)
    fat_pad = _superellipse(x2, y2, ch.xb, ch.yb - 0.62 * ch.b_cav, 0.13 * ch.a_cav, 0.3 * ch.b_cav) <= 1.0
    _paint2d(tissue, (ch.u(z) > ch.u_dome_l + 0.2) & (ch.u(z) < ch.u_carina + 0.1), fat_pad, T["fat"])
    lung_band = _paint_lungs(tissue, grid, ch, cavity)
    heart = _paint_heart(tissue, grid, ch)
    _paint_great_vessels(tissue, grid, ch)
    hila = _paint_airways(tissue, grid, ch)
    _paint_spine(tissue, grid, ch)
    _paint_sternum(tissue, grid, ch)
    _paint_ribs(tissue, grid, ch)
    return {"hila_xyz_mm": hila, "heart": heart, "lung_band": lung_band}


def _axes(grid: Grid):
    nz, ny, nx = grid.shape_zyx
    dz, dy, dx = grid.spacing_zyx_mm
    ox, oy, oz = grid.origin_xyz_mm
    return oz + dz * np.arange(nz), oy + dy * np.arange(ny), ox + dx * np.arange(nx)


def _table_mask(y2, x2, ch: Chest):
    top = ch.yb + ch.b_body + 1.0
    thick = max(0.05 * ch.a_body, 3.0)
    return (y2 >= top) & (y2 <= top + thick) & (np.abs(x2 - ch.xb) <= 1.15 * ch.a_body)


def _diaphragm_u(x2, y2, ch: Chest):
    """u of the diaphragm surface over the plane (Y, X): two domes, costophrenic recesses lower."""
    side = np.where(x2 < ch.xb, -1.0, 1.0)
    dome = np.where(side < 0, ch.u_dome_r, ch.u_dome_l)
    rr = (((x2 - (ch.xb + side * 0.45 * ch.a_cav)) / (0.62 * ch.a_cav)) ** 2
          + ((y2 - ch.yb + 0.1 * ch.b_cav) / ch.b_cav) ** 2)
    return dome - ch.dome_depth * np.minimum(rr, 1.6)


def _paint_liver(tissue, grid: Grid, ch: Chest, cavity) -> None:
    """Liver under the right dome (and the abdomen's soft tissue under the left one)."""
    z, y, x = _axes(grid)
    dia = _diaphragm_u(x[None, :], y[:, None], ch)
    ks = np.flatnonzero(ch.u(z) < dia.max())
    if ks.size == 0:
        return
    sl = slice(ks[0], ks[-1] + 1)
    plane = cavity & (x < ch.xb + 0.15 * ch.a_cav)[None, :]
    below = ch.u(z[sl])[:, None, None] < dia[None]
    np.copyto(tissue[sl], T["liver"], where=below & plane[None])


def _paint_lungs(tissue, grid: Grid, ch: Chest, cavity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two lungs: cavity halves outside the mediastinum, above the diaphragm, domed apices.

    Returns the partial-volume band of the diaphragm and apex surfaces as flat voxel
    indices, lung fractions (float32) and the tissue the lung replaced (uint8).
    """
    z, y, x = _axes(grid)
    y2, x2 = y[:, None], x[None, :]
    yn = np.clip((y2 - ch.yb) / ch.b_cav, -1, 1)
    w_med = np.interp(yn, [-1, -0.5, 0, 0.5, 1], [0.05, 0.14, 0.2, 0.2, 0]) * ch.a_cav
    w_med = np.maximum(w_med, np.where(yn > 0.4, 1.25 * ch.r_vert, 0))
    ell = (((np.abs(x2 - ch.xb) - 0.5 * ch.a_cav) / (0.55 * ch.a_cav)) ** 2
           + ((y2 - ch.yb - 0.1 * ch.b_cav) / (1.05 * ch.b_cav)) ** 2)         # one ellipse per side
    plane = cavity & (np.abs(x2 - ch.xb) > w_med) & (ell <= 1.0)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.uint8))
    u = ch.u(z)
    ks = np.flatnonzero(u < ch.u_apex)
    idx = np.flatnonzero(plane)
    if ks.size == 0 or idx.size == 0:
        return empty
    sl = slice(ks[0], ks[-1] + 1)
    h_cap = 0.3
    f32 = np.float32
    top_mm = (ch.u_apex - h_cap + h_cap * np.sqrt(np.clip(1.0 - ell.ravel()[idx], 0, 1))) * ch.length  # apex dome
    bottom_mm = _diaphragm_u(x2, y2, ch).ravel()[idx] * ch.length
    zs = (u[sl] * ch.length).astype(f32)[:, None]
    # Vertical distance (mm) inside the lung to the nearer of the two surfaces -> slab fraction.
    # Evaluated on the lung's in-plane pixels only: (n_slices, n_pixels) float32.
    inside_mm = np.minimum(zs - bottom_mm.astype(f32)[None], top_mm.astype(f32)[None] - zs)
    frac = np.clip(f32(0.5) + inside_mm * f32(1.0 / grid.slab_mm), f32(0.0), f32(1.0))
    flat = tissue[sl].reshape(sl.stop - sl.start, -1)      # view: (slices, Y*X)
    sub = flat[:, idx]
    band = np.nonzero((frac > 0.0) & (frac < 1.0))
    under = sub[band].copy()
    sub[frac >= 0.5] = T["lung"]
    flat[:, idx] = sub
    plane_size = tissue.shape[1] * tissue.shape[2]
    flat_idx = (band[0] + sl.start).astype(np.int64) * plane_size + idx[band[1]]
    return flat_idx, frac[band], under


def _ellipsoid_box(grid: Grid, centre, semi, angle):
    """Box and normalised radius^2 (nz, ny, nx) of an ellipsoid rotated by ``angle`` about z."""
    r = max(semi)
    box = grid.box(np.asarray(centre) - r, np.asarray(centre) + r)
    if box is None:
        return None, None
    z, y, x = _axes(grid)
    zz, yy, xx = z[box[0]][:, None, None], y[box[1]][None, :, None], x[box[2]][None, None, :]
    c, s = math.cos(angle), math.sin(angle)
    lx = c * (xx - centre[0]) + s * (yy - centre[1])
    ly = -s * (xx - centre[0]) + c * (yy - centre[1])
    return box, (lx / semi[0]) ** 2 + (ly / semi[1]) ** 2 + ((zz - centre[2]) / semi[2]) ** 2


def _paint_heart(tissue, grid: Grid, ch: Chest) -> dict:
    """Heart on the left dome: epicardial fat, myocardium, blood pool."""
    centre = (ch.xb + 0.14 * ch.a_cav, ch.yb - 0.2 * ch.b_cav, float(ch.z(ch.u_dome_l + 0.1)))
    semi = (0.5 * ch.a_cav, 0.6 * ch.b_cav, 0.13 * ch.length)
    box, rr = _ellipsoid_box(grid, centre, [1.1 * v for v in semi], ch.heart_angle)
    if box is not None:
        sub = tissue[box]
        rr = rr * 1.21                                # back to the unscaled ellipsoid
        sub[rr <= 1.21] = T["fat"]
        sub[rr <= 1.0] = T["muscle"]
        sub[rr <= 0.75] = T["blood"]
    return {"centre_xyz_mm": centre, "semi_axes_mm": semi}


def _paint_tube(tissue, grid: Grid, p0, p1, radius: float, label: int) -> None:
    res = tube_occupancy(p0, p1, radius, radius, grid)
    if res is not None:
        box, occ = res
        tissue[box][occ >= 0.5] = label


def _paint_great_vessels(tissue, grid: Grid, ch: Chest) -> None:
    s = ch.s
    z_arch = float(ch.z(ch.u_carina + 0.1))
    r_ao = 12.0 * s
    desc = (ch.xb + ch.r_vert + r_ao + 2 * s, ch.y_vert - 0.5 * ch.r_vert)
    asc = (ch.xb - 0.05 * ch.a_cav, ch.yb - 0.35 * ch.b_cav)
    _paint_tube(tissue, grid, (*desc, ch.z(-0.05)), (*desc, z_arch), r_ao, T["blood"])
    _paint_tube(tissue, grid, (*asc, ch.z(ch.u_dome_l + 0.15)), (*asc, z_arch), 1.25 * r_ao, T["blood"])
    mid = (ch.xb + 0.1 * ch.a_cav, 0.5 * (asc[1] + desc[1]), z_arch + 1.2 * r_ao)
    _paint_tube(tissue, grid, (*asc, z_arch), mid, 1.1 * r_ao, T["blood"])
    _paint_tube(tissue, grid, mid, (*desc, z_arch), r_ao, T["blood"])
    svc = (ch.xb - 0.2 * ch.a_cav, ch.yb - 0.3 * ch.b_cav)
    _paint_tube(tissue, grid, (*svc, ch.z(ch.u_dome_l + 0.2)), (*svc, ch.z(1.05)), 8.0 * s, T["blood"])


def _paint_airways(tissue, grid: Grid, ch: Chest) -> list:
    """Trachea and main bronchi (wall, then air lumen); returns the two hilum points (xyz mm)."""
    s = ch.s
    r_tr, wall = 9.0 * s, max(2.0 * s, 0.5 * grid.spacing_zyx_mm[1])
    top = (ch.xb, ch.y_vert - ch.r_vert - r_tr - 10 * s, float(ch.z(1.05)))
    carina = (ch.xb, top[1], float(ch.z(ch.u_carina)))
    hila = []
    for side in (-1.0, 1.0):
        hilum = (ch.xb + side * 0.3 * ch.a_cav, ch.yb + 0.05 * ch.b_cav, float(ch.z(ch.u_carina - 0.06)))
        hila.append(hilum)
        _paint_tube(tissue, grid, carina, hilum, 6.0 * s + wall, T["soft_tissue"])
    _paint_tube(tissue, grid, top, carina, r_tr + wall, T["soft_tissue"])
    for hilum in hila:
        _paint_tube(tissue, grid, carina, hilum, 6.0 * s, T["airway"])
    _paint_tube(tissue, grid, top, carina, r_tr, T["airway"])
    return hila


def _bone_slices(z, ch: Chest, pitch: float, solid: float, phase: float) -> np.ndarray:
    """Bool (Z,): slices inside a bony segment of a periodic craniocaudal pattern."""
    return ((z - ch.z_low) / pitch + phase) % 1.0 < solid


def _paint_spine(tissue, grid: Grid, ch: Chest) -> None:
    """Vertebrae (cortical shell, cancellous core, posterior arch) with discs; canal with CSF."""
    z, y, x = _axes(grid)
    y2, x2 = y[:, None], x[None, :]
    s, rv, yv = ch.s, ch.r_vert, ch.y_vert
    cortex = max(1.5 * s, 0.7 * grid.spacing_zyx_mm[1])
    pitch = max(0.085 * ch.length, 3 * grid.spacing_zyx_mm[0])
    bony = _bone_slices(z, ch, pitch, 0.8, ch.vert_phase)
    body = _superellipse(x2, y2, ch.xb, yv, 1.1 * rv, rv) <= 1.0
    core = _superellipse(x2, y2, ch.xb, yv, 1.1 * rv - cortex, rv - cortex) <= 1.0
    r_canal = 7.0 * s
    yc = yv + rv + r_canal + 1.0 * s
    canal = _superellipse(x2, y2, ch.xb, yc, r_canal, r_canal) <= 1.0
    arch = _superellipse(x2, y2, ch.xb, yc, r_canal + 4 * s, r_canal + 4 * s) <= 1.0
    spinous = (np.abs(x2 - ch.xb) < 3.5 * s) & (y2 > yc) & (y2 < yc + r_canal + 18 * s)
    transverse = (np.abs(y2 - yc + 2 * s) < 4 * s) & (np.abs(x2 - ch.xb) < 28 * s)
    inside_fat = _superellipse(x2, y2, ch.xb, ch.yb, ch.a_body - ch.t_fat - 4 * s, ch.b_body - ch.t_fat - 4 * s,
                               ch.p_body) <= 1.0
    _paint2d(tissue, ~bony, body, T["disc"])
    _paint2d(tissue, bony, (body | arch | spinous | transverse) & inside_fat, T["bone_cortical"])
    _paint2d(tissue, bony, core, T["bone_cancellous"])
    _paint2d(tissue, np.ones(z.size, bool), canal, T["csf"])


def _paint_sternum(tissue, grid: Grid, ch: Chest) -> None:
    z, y, x = _axes(grid)
    y2, x2 = y[:, None], x[None, :]
    s = ch.s
    yc = ch.yb - (ch.b_body - ch.t_fat - 6 * s)
    outer = _superellipse(x2, y2, ch.xb, yc, 13 * s, 5 * s) <= 1.0
    cortex = max(1.5 * s, 0.7 * grid.spacing_zyx_mm[1])
    inner = _superellipse(x2, y2, ch.xb, yc, 13 * s - cortex, 5 * s - cortex) <= 1.0
    zsel = (ch.u(z) > ch.u_dome_l + 0.05) & (ch.u(z) < ch.u_apex - 0.05)
    _paint2d(tissue, zsel, outer, T["bone_cortical"])
    _paint2d(tissue, zsel, inner, T["bone_cancellous"])


def _paint_ribs(tissue, grid: Grid, ch: Chest) -> None:
    """Twelve rib pairs: arcs along the chest wall that descend from the spine to the front.

    Evaluated only on the band of pixels around the rib centre-line ellipse, for all
    slices at once: (Z, n_band) arrays.
    """
    z, y, x = _axes(grid)
    y2, x2 = y[:, None], x[None, :]
    t = ch.rib_thickness
    a_r, b_r = ch.a_cav + 2.0 * ch.s + 0.5 * t, ch.b_cav + 2.0 * ch.s + 0.5 * t
    rho = _superellipse(x2, y2, ch.xb, ch.yb, a_r, b_r)
    dist = np.hypot(x2 - ch.xb, y2 - ch.yb)
    radial_mm = dist * (1.0 - 1.0 / np.maximum(rho, 1e-6))    # signed radial offset from the centre line
    band = np.abs(radial_mm) <= 0.5 * t
    phi = np.abs(np.arctan2((x2 - ch.xb) / a_r, (y2 - ch.yb) / b_r))  # 0 posterior .. pi anterior
    band &= (phi > 0.12) & (phi < 0.78 * math.pi)
    idx = np.flatnonzero(band)
    if idx.size == 0:
        return
    radial = radial_mm.ravel()[idx][None, :]
    ph = phi.ravel()[idx][None, :] / math.pi
    height = max(0.032 * ch.length, 1.2 * grid.spacing_zyx_mm[0])
    pitch = 0.068 * ch.length
    z_first = ch.z(ch.u_apex) - (0.2 + 0.3 * ch.rib_phase) * pitch   # first rib's posterior end
    w = (z_first - ch.rib_drop * ch.length * ph ** 1.3 - z[:, None]) / pitch   # (Z, n_band)
    k = np.rint(w)
    dz_mm = (w - k) * pitch
    rr = (radial / (0.5 * t)) ** 2 + (dz_mm / (0.5 * height)) ** 2
    rib = (rr <= 1.0) & (k >= 0) & (k < 12)
    cortex = max(1.2 * ch.s, 0.6 * grid.spacing_zyx_mm[1]) / (0.5 * min(t, height))
    core = rib & (rr <= (1.0 - min(cortex, 0.9)) ** 2)
    flat = tissue.reshape(tissue.shape[0], -1)
    sub = flat[:, idx]
    sub[rib] = T["bone_cortical"]
    sub[core] = T["bone_cancellous"]
    flat[:, idx] = sub
