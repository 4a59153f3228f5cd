"""Lung nodules: drawn with LIDC-like statistics, placed in the lungs, painted with partial volume.

Each nodule is a :class:`~ml.phantom.shapes.StarShape` (sphere, ellipsoid or lobulated).
Its ground truth (centroid, volume, equivalent diameter, bounding box) comes from
the analytic shape; its label is "voxel centre inside the shape", never a threshold
of the image. Placement is by proposal and rejection against the real (full
resolution) lung mask and tissue map: free nodules lie wholly inside the lung,
vessel-attached ones overlap a vessel, juxtapleural ones poke through the pleura.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import PhantomConfig, diameter_cdf, diameter_quantile_mm
from .phantom import TISSUE_LABELS as T
from .phantom import Lesion
from .shapes import Grid, StarShape, random_rotation

log = logging.getLogger(__name__)

CORE_HU = {"solid": (-10.0, 100.0), "part_solid": (-10.0, 100.0), "ground_glass": (-630.0, -300.0),
           "calcified": (250.0, 900.0)}
HALO_HU = (-650.0, -350.0)
MAX_ATTEMPTS = 60
# Tissues a juxtapleural nodule may push into (chest wall, mediastinum, diaphragm).
PLEURA_NEIGHBOURS = {T["lung"], T["vessel"], T["soft_tissue"], T["muscle"], T["fat"], T["liver"], T["blood"]}


@dataclass
class Scene:
    """Mutable volumes the nodules are placed into (all (Z, Y, X) on ``grid``)."""

    grid: Grid
    img: np.ndarray        # float32 HU, painted in place
    tissue: np.ndarray     # uint8 tissue classes, updated in place
    lung: np.ndarray       # bool lung cavities
    label: np.ndarray      # uint16 lesion ids, updated in place
    vessels: np.ndarray    # (M, 8) float32 segments


def draw_count(cfg: PhantomConfig, rng: np.random.Generator) -> int:
    """Number of nodules: 0 with ``p_no_nodules``, else geometric-like on [max(1, lo), hi]."""
    lo, hi = cfg.n_nodules_range
    none, u = rng.random(), rng.random()
    if hi == 0 or (lo == 0 and none < cfg.p_no_nodules):
        return 0
    ks = np.arange(max(1, lo), hi + 1)
    w = cfg.nodule_count_decay ** ks.astype(float)
    return int(ks[np.searchsorted(np.cumsum(w) / w.sum(), u)])


def _choice(pairs, rng: np.random.Generator):
    names = [k for k, _ in pairs]
    w = np.array([p for _, p in pairs], float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def draw_design(cfg: PhantomConfig, rng: np.random.Generator) -> dict:
    """Texture, shape kind, attachment, equivalent diameter (mm), HU and shape parameters."""
    texture = _choice(cfg.texture_probs, rng)
    kind = _choice(cfg.shape_probs, rng)
    attach = _choice(cfg.attach_probs, rng)
    lo, hi = cfg.nodule_diameter_mm_range
    u = rng.uniform(diameter_cdf(cfg, lo), diameter_cdf(cfg, hi))
    diameter = float(np.clip(diameter_quantile_mm(cfg, u), lo, hi))
    ratios = {"sphere": (1.0, 1.0, 1.0), "ellipsoid": (1.0, rng.uniform(0.65, 0.95), rng.uniform(0.5, 0.9)),
              "lobulated": (1.0, rng.uniform(0.8, 1.0), rng.uniform(0.75, 1.0))}[kind]
    lobes = ()
    if kind == "lobulated":
        dirs = rng.normal(size=(int(rng.integers(3, 7)), 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lobes = tuple((*d, rng.uniform(0.25, 0.5), rng.uniform(4.0, 10.0)) for d in dirs)
    rotation = random_rotation(rng)
    unit = StarShape((0.0, 0.0, 0.0), tuple(map(tuple, rotation)), ratios, lobes)
    k = (math.pi * diameter ** 3 / 6.0 / unit.volume_mm3()) ** (1.0 / 3.0)
    core_hu = float(rng.uniform(*CORE_HU[texture]))
    halo_hu = float(rng.uniform(*HALO_HU))
    core_fraction = float(rng.uniform(0.35, 0.65))
    return {"texture": texture, "kind": kind, "attach": attach, "diameter_mm": diameter, "hu": core_hu,
            "halo_hu": halo_hu if texture == "part_solid" else None,
            "core_scale": core_fraction if texture == "part_solid" else None,
            "semi_axes_mm": tuple(float(k * r) for r in ratios), "lobes": lobes, "rotation": rotation}


def _shape_at(design: dict, origin) -> StarShape:
    return StarShape(tuple(float(v) for v in origin), tuple(map(tuple, design["rotation"])),
                     design["semi_axes_mm"], design["lobes"])


class _Proposer:
    """Candidate centres from a coarse (~2 mm) distance-to-pleura map and the vessel segments."""

    def __init__(self, scene: Scene):
        g = scene.grid
        dz, dy, dx = g.spacing_zyx_mm
        self.step = np.array([max(1, round(2.5 / dz)), max(1, round(2.5 / dy)), max(1, round(2.5 / dx))])
        coarse = scene.lung[::self.step[0], ::self.step[1], ::self.step[2]]
        self.coarse_mm = np.array([dz, dy, dx]) * self.step
        self.offset = np.zeros(3, int)                 # coarse index of the cropped map's corner
        nz = np.nonzero(coarse)
        if nz[0].size:
            self.offset = np.array([a.min() for a in nz])
            hi = np.array([a.max() + 1 for a in nz])
            coarse = coarse[tuple(slice(a, b) for a, b in zip(self.offset, hi))]
        self.edt = ndi.distance_transform_edt(np.pad(coarse, 1), sampling=self.coarse_mm)[1:-1, 1:-1, 1:-1]
        self.grid = g
        self.scene = scene
        seg = scene.vessels
        mid = 0.5 * (seg[:, :3] + seg[:, 3:6]) if len(seg) else np.zeros((0, 3))
        self.mid_in_lung = self._in_lung(mid)

    def _in_lung(self, xyz: np.ndarray) -> np.ndarray:
        if len(xyz) == 0:
            return np.zeros(0, bool)
        g = self.grid
        idx = np.rint((xyz[:, ::-1] - np.array(g.origin_xyz_mm)[::-1]) / np.array(g.spacing_zyx_mm)).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(g.shape_zyx)), axis=1)
        out = np.zeros(len(xyz), bool)
        out[ok] = self.scene.lung[tuple(idx[ok].T)]
        return out

    def _from_edt(self, lo_mm: float, hi_mm: float, rng) -> np.ndarray | None:
        idx = np.flatnonzero((self.edt >= lo_mm) & (self.edt <= hi_mm))
        if idx.size == 0:
            return None
        kzyx = np.array(np.unravel_index(rng.choice(idx), self.edt.shape)) + self.offset
        zyx = kzyx * self.step + rng.uniform(-0.5, 0.5, 3) * self.step
        g = self.grid
        return np.array(g.origin_xyz_mm) + (zyx * np.array(g.spacing_zyx_mm))[::-1]

    def propose(self, attach: str | None, radius_mm: float, rng) -> np.ndarray | None:
        if attach == "pleura":
            return self._from_edt(0.4 * radius_mm, 1.0 * radius_mm, rng)
        if attach == "vessel":
            return self._next_to_vessel(radius_mm, rng)
        return self._from_edt(radius_mm + 2.0, np.inf, rng)

    def _next_to_vessel(self, radius_mm: float, rng) -> np.ndarray | None:
        seg = self.scene.vessels
        ok = np.flatnonzero(self.mid_in_lung & (seg[:, 6] >= max(0.5, 0.08 * radius_mm)))
        if ok.size == 0:
            return None
        s = seg[rng.choice(ok)]
        p0, p1 = s[:3].astype(float), s[3:6].astype(float)
        q = p0 + rng.uniform(0.2, 0.8) * (p1 - p0)
        axis = (p1 - p0) / max(np.linalg.norm(p1 - p0), 1e-6)
        perp = np.cross(axis, rng.normal(size=3))
        perp /= max(np.linalg.norm(perp), 1e-6)
        return q + perp * (float(s[6]) + radius_mm * rng.uniform(0.4, 0.8))


def _acceptable(scene: Scene, attach: str | None, box, inside: np.ndarray) -> bool:
    if not inside.any() or scene.label[box][inside].any():
        return False
    in_lung = scene.lung[box][inside]
    tissue = scene.tissue[box][inside]
    vessel_frac = float(np.mean(tissue == T["vessel"]))
    if attach == "pleura":
        frac = float(in_lung.mean())
        outside = np.unique(tissue[~in_lung])
        return 0.5 <= frac < 1.0 and set(outside.tolist()) <= PLEURA_NEIGHBOURS and vessel_frac < 0.2
    if not in_lung.all():
        return False
    if attach == "vessel":
        return 0.0 < vessel_frac < 0.35
    return vessel_frac < 0.15


def _paint(scene: Scene, shape: StarShape, design: dict, lesion_id: int, res) -> None:
    box, occ, inside = res
    img = scene.img[box]
    if design["texture"] == "part_solid":
        img += occ * (design["halo_hu"] - img)
        core = shape.scaled(design["core_scale"]).occupancy(scene.grid)
        if core is not None:
            cbox, cocc, _ = core
            cimg = scene.img[cbox]
            cimg += cocc * (design["hu"] - cimg)
    else:
        img += occ * (design["hu"] - img)
    scene.label[box][inside] = lesion_id
    scene.tissue[box][inside] = T["lesion"]


def _record(shape: StarShape, design: dict, lesion_id: int, attach: str | None) -> Lesion:
    volume_mm3 = shape.volume_mm3()
    lo, hi = shape.bbox_xyz_mm()
    r3 = lambda v: tuple(round(float(c), 4) for c in v)  # noqa: E731
    params = {"origin_xyz_mm": r3(shape.origin_xyz_mm), "rotation": [r3(row) for row in design["rotation"]],
              "semi_axes_mm": r3(design["semi_axes_mm"]), "lobes": [r3(lobe) for lobe in design["lobes"]]}
    if design["texture"] == "part_solid":
        params.update(halo_hu=round(design["halo_hu"], 2), core_scale=round(design["core_scale"], 4),
                      core_diameter_mm=round(design["diameter_mm"] * design["core_scale"], 4))
    return Lesion(
        id=lesion_id, centre_xyz_mm=r3(shape.centroid_xyz_mm()),
        diameter_mm=round((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0), 4),
        axes_mm=r3(2.0 * np.asarray(design["semi_axes_mm"])), volume_ml=round(volume_mm3 / 1000.0, 6),
        hu=round(design["hu"], 2), texture=design["texture"], shape=design["kind"], attached_to=attach,
        bbox_xyz_mm=(r3(lo), r3(hi)), params=params)


def place_nodules(scene: Scene, cfg: PhantomConfig, rng: np.random.Generator) -> list[Lesion]:
    """Draw, place and paint this scan's nodules; returns their ground truth (ids 1..n)."""
    count = draw_count(cfg, rng)
    designs = [draw_design(cfg, rng) for _ in range(count)]
    if not designs or not scene.lung.any():
        return []
    proposer = _Proposer(scene)
    lesions: list[Lesion] = []
    for design in sorted(designs, key=lambda d: -d["diameter_mm"]):   # big ones first: they need room
        radius = design["diameter_mm"] / 2.0
        for attempt in range(MAX_ATTEMPTS):
            attach = design["attach"] if attempt < MAX_ATTEMPTS // 2 else None
            centre = proposer.propose(attach, radius, rng)
            if centre is None:
                continue
            shape = _shape_at(design, centre)
            res = shape.occupancy(scene.grid)
            if res is None or not _acceptable(scene, attach, res[0], res[2]):
                continue
            lesion_id = len(lesions) + 1
            _paint(scene, shape, design, lesion_id, res)
            lesions.append(_record(shape, design, lesion_id, attach))
            break
        else:
            log.info("could not place a %.1f mm %s nodule; skipped", design["diameter_mm"], design["texture"])
    return lesions
