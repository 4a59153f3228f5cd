"""Patch samplers fighting class imbalance, and CenterNet-style detection targets.

Detection patches (``DET_PATCH``^3 at 2 mm): ``P_POSITIVE`` around a nodule (random offset so
it can sit anywhere in the patch), ``P_VESSEL`` centred on a vessel voxel (hard negatives: vessels
cut across look like nodules), the rest anywhere in the lungs. Nodules are drawn in proportion to
:func:`lesion_weights` (small, sub-solid, calcified and attached ones are the ones a detector misses,
so they are seen more often); negative patches come from a case in proportion to its lung box's
volume, so a scan contributes background in proportion to how much of it there is (a mini chest
with a sparse vessel tree would otherwise supply as many hard negatives as a full chest). Segmentation patches
(``SEG_PATCH``^3 at 1 mm) are crops of the cached cubes with up to +-8 mm jitter; ~15 % are
vessel cubes with an empty target. Every patch gets a random flip / in-plane rot90.
"""
from __future__ import annotations

import numpy as np

from ..preprocessing import normalise_hu
from ..transforms import apply_array, apply_points, random_transform
from .data import DET_SPACING_MM, SEG_CACHE

DET_PATCH = 48
SEG_PATCH = 48
P_POSITIVE, P_VESSEL = 0.5, 0.3
P_SEG_NEGATIVE = 0.15
MIN_SIGMA_VOX = 0.75
# Extra sampling weight (on top of 1) of a nodule the detector finds hard to see.
SMALL_NODULE_MM, SMALL_EXTRA = 8.0, 1.0
TEXTURE_EXTRA = {"part_solid": 1.0, "ground_glass": 1.0, "calcified": 2.0}
ATTACHED_EXTRA = 0.5


def lesion_weights(case: dict) -> np.ndarray:
    """Sampling weight of each of a case's nodules: 1, plus ``SMALL_EXTRA`` below ``SMALL_NODULE_MM``,
    plus ``TEXTURE_EXTRA`` by texture and ``ATTACHED_EXTRA`` when attached to a vessel or the pleura
    (texture / attachment only where the case records them: phantoms do, reviewed cases do not)."""
    les = case["lesions"]
    w = 1.0 + SMALL_EXTRA * (les[:, 3] < SMALL_NODULE_MM)
    if "lesion_texture" in case:
        w = w + np.array([TEXTURE_EXTRA.get(str(t), 0.0) for t in case["lesion_texture"]]).reshape(-1)
    if "lesion_attached" in case:
        w = w + ATTACHED_EXTRA * (np.asarray(case["lesion_attached"]).astype(str) != "")
    return w.astype(float)


def heat_sigma_vox(diameter_mm) -> np.ndarray:
    """Gaussian sigma (det voxels) of a nodule's heat-map blob: diameter / 6, at least 0.75 voxel."""
    return np.maximum(MIN_SIGMA_VOX, np.asarray(diameter_mm, float) / (6.0 * DET_SPACING_MM))


def det_targets(centres_zyx: np.ndarray, diameters_mm: np.ndarray, shape) -> tuple[np.ndarray, ...]:
    """CenterNet targets on a patch grid.

    Returns ``heat`` (Z, Y, X) in [0, 1] (1 at each rounded centre inside the patch),
    ``reg`` (4, Z, Y, X) = (log diameter_mm, centre - voxel in z, y, x voxels), and ``reg_mask``
    (Z, Y, X) bool where ``reg`` is supervised (heat >= 0.5 of that nodule).
    """
    heat = np.zeros(shape, np.float32)
    reg = np.zeros((4, *shape), np.float32)
    reg_mask = np.zeros(shape, bool)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))  # (3, Z, Y, X)
    for c, d, s in zip(centres_zyx, diameters_mm, heat_sigma_vox(diameters_mm)):
        d2 = sum((grid[i] - c[i]) ** 2 for i in range(3))
        g = np.exp(-d2 / (2 * s * s)).astype(np.float32)
        r = np.rint(c).astype(int)
        inside = np.all((r >= 0) & (r < np.asarray(shape)))
        if inside:
            g[tuple(r)] = 1.0
        near = (g >= 0.5) & (g >= heat)
        reg[0][near] = np.log(d)
        for i in range(3):
            reg[1 + i][near] = (c[i] - grid[i])[near]
        reg_mask |= near
        np.maximum(heat, g, out=heat)
    return heat, reg, reg_mask


def crop_pad(a: np.ndarray, start, size: int, fill) -> np.ndarray:
    """``a[start:start+size]`` on the last three axes, padding outside with ``fill``."""
    out = np.full((*a.shape[:-3], size, size, size), fill, a.dtype)
    start = np.asarray(start, int)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + size, a.shape[-3:])
    if np.any(hi <= lo):
        return out
    src = a[..., lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    d = lo - start
    out[..., d[0]:d[0] + src.shape[-3], d[1]:d[1] + src.shape[-2], d[2]:d[2] + src.shape[-1]] = src
    return out


class DetectionSampler:
    """Draws detection batches from cached cases: ``(x, heat, reg, reg_mask)`` float32 arrays
    of shapes (B, 1, P, P, P), (B, 1, ...), (B, 4, ...), (B, 1, ...)."""

    def __init__(self, cases: list[dict], patch: int = DET_PATCH):
        self.cases, self.patch = cases, patch
        self.lesion_index = [(ci, li) for ci, c in enumerate(cases) for li in range(len(c["lesions"]))]
        w = np.concatenate([lesion_weights(c) for c in cases]) if self.lesion_index else np.ones(0)
        self.lesion_p = w / w.sum() if len(w) else w
        size = np.array([c["det_hu"].size for c in cases], float)
        self.case_p = size / size.sum()

    def _centre(self, rng) -> tuple[int, np.ndarray]:
        u = rng.random()
        if u < P_POSITIVE and self.lesion_index:
            ci, li = self.lesion_index[rng.choice(len(self.lesion_index), p=self.lesion_p)]
            jitter = rng.uniform(-0.35, 0.35, 3) * self.patch
            return ci, self.cases[ci]["lesions"][li, :3] + jitter
        ci = int(rng.choice(len(self.cases), p=self.case_p))
        pts = self.cases[ci]["vessel_zyx"] if u < P_POSITIVE + P_VESSEL else self.cases[ci]["lung_zyx"]
        if len(pts) == 0:
            pts = np.array([np.asarray(self.cases[ci]["det_hu"].shape) // 2])
        return ci, pts[rng.integers(len(pts))].astype(float)

    def sample(self, rng: np.random.Generator, batch: int):
        xs, heats, regs, masks = [], [], [], []
        for _ in range(batch):
            ci, centre = self._centre(rng)
            case = self.cases[ci]
            start = np.rint(centre).astype(int) - self.patch // 2
            hu = crop_pad(case["det_hu"], start, self.patch, np.int16(-1024))
            t = random_transform(rng)
            lesions = case["lesions"]
            centres = apply_points(lesions[:, :3] - start, (self.patch,) * 3, t)
            heat, reg, mask = det_targets(centres, lesions[:, 3], (self.patch,) * 3)
            xs.append(normalise_hu(apply_array(hu, t)))
            heats.append(heat), regs.append(reg), masks.append(mask)
        return (np.stack(xs)[:, None], np.stack(heats)[:, None], np.stack(regs),
                np.stack(masks)[:, None].astype(np.float32))


class SegmentationSampler:
    """Draws segmentation batches ``(x (B, 1, P, P, P), label (B, 1, P, P, P))`` float32 from the cached
    cubes (random crop = up to +-8 mm jitter, random flip / rot90): a negative cube with probability
    ``p_negative``; works when a data set has only negative cubes (a signed-off case with nothing in
    it) or only positive ones."""

    def __init__(self, cases: list[dict], patch: int = SEG_PATCH, p_negative: float = P_SEG_NEGATIVE):
        self.cases, self.patch, self.p_negative = cases, patch, p_negative
        self.pos = [(ci, k) for ci, c in enumerate(cases) for k in range(len(c["seg_hu"])) if c["seg_is_lesion"][k]]
        self.neg = [(ci, k) for ci, c in enumerate(cases) for k in range(len(c["seg_hu"])) if not c["seg_is_lesion"][k]]

    def __len__(self) -> int:
        return len(self.pos) + len(self.neg)

    def sample(self, rng: np.random.Generator, batch: int):
        xs, ys = [], []
        for _ in range(batch):
            use_neg = bool(self.neg) and (not self.pos or rng.random() < self.p_negative)
            pool = self.neg if use_neg else self.pos
            ci, k = pool[rng.integers(len(pool))]
            start = rng.integers(0, SEG_CACHE - self.patch + 1, 3)
            t = random_transform(rng)
            hu = crop_pad(self.cases[ci]["seg_hu"][k], start, self.patch, np.int16(-1024))
            lab = crop_pad(self.cases[ci]["seg_label"][k], start, self.patch, False)
            xs.append(normalise_hu(apply_array(hu, t)))
            ys.append(apply_array(lab, t).astype(np.float32))
        return np.stack(xs)[:, None], np.stack(ys)[:, None]
