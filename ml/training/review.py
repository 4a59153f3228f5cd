"""Signed-off reviews -> the cached-case dicts of :mod:`ml.training.data`, and samplers that mix data sets.

A review case has no tissue labels, only the radiologist's answer: *positives* (accepted / edited /
added findings: centre, diameter, optional mask on the volume's grid) and *hard negatives* (centres
of rejected AI findings). :func:`build_case_from_labels` turns one into the same dict as
:func:`ml.training.data.build_case`, so :class:`~ml.training.samplers.DetectionSampler` and the
segmentation samplers train on it unchanged:

``det_hu``      the lung box (HU threshold, :func:`ml.preprocessing.lung_box`, grown to hold every
                labelled point + 10 mm) resampled to 2 mm, int16 HU;
``lesions``     (N, 4) centre in det voxels + diameter mm;
``lung_zyx``    det voxels of the lungs from HU alone: air < -400 HU not connected to the in-plane
                border, holes filled slice by slice (so vessels and nodules inside count as lung);
``vessel_zyx``  where the sampler puts its "hard negative" patches: the rejected findings, repeated so
                they make up ``HARD_NEGATIVE_SHARE`` of the rows, plus bright (> -300 HU) voxels inside
                the (eroded) lungs away from every positive -- vessel-like candidates;
``seg_hu`` / ``seg_label`` / ``seg_is_lesion``: 64 mm cubes at 1 mm on each positive, each hard
                negative (at most ``MAX_SEG_NEGATIVES``) and one bright voxel far from the positives;
                the label is the union of the positives' masks (mask: resampled from the original
                grid trilinearly, then >= 0.5, as for phantoms; no mask: a ball of the diameter drawn
                on the 1 mm grid), so it is empty at a hard negative unless a positive is nearby.
Extra keys (ignored by the samplers): ``case_id``, ``hard_negative_zyx`` (det voxels, float),
``n_hard_negatives_dropped`` (rejected findings inside a positive: the positive wins), and the det
grid's geometry ``det_origin_xyz_mm`` / ``det_direction`` (spacing ``DET_SPACING_MM``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..preprocessing import coarse_lung_mask, lung_box
from ..volumes import Volume, resample, resample_array
from .data import DET_SPACING_MM, N_SAMPLE_POINTS, SEG_CACHE, SEG_SPACING_MM, seg_cube

HARD_NEGATIVE_SHARE = 0.5       # of the "vessel" patch centres, when a case has rejected findings
MAX_SEG_NEGATIVES = 16          # segmentation cubes at rejected findings per case
BRIGHT_HU = -300.0              # in-lung voxels above this are vessel-like candidates
BOX_MARGIN_MM = 10.0            # around every labelled point when growing the lung box
CONFLICT_MARGIN_MM = 2.0        # a rejected finding within radius + this of a positive is dropped
FAR_FROM_POSITIVE_MM = 15.0


@dataclass
class LabelledLesion:
    """A positive: an accepted / edited / added finding. ``mask``: bool (z, y, x) box on the volume's
    grid starting at voxel ``mask_origin_zyx``, or None (a ball of ``diameter_mm`` is used)."""

    centre_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    mask: np.ndarray | None = None
    mask_origin_zyx: tuple[int, int, int] | None = None


@dataclass
class LabelledCase:
    """One signed-off review (or one phantom): the volume in HU with its geometry and the labels."""

    case_id: str
    volume: Volume
    lesions: list[LabelledLesion] = field(default_factory=list)
    hard_negatives_xyz_mm: list[tuple[float, float, float]] = field(default_factory=list)


def stable_seed(text: str) -> int:
    """A seed from a string that does not change between processes (``hash()`` is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def label_fingerprint(case: LabelledCase) -> str:
    """SHA-256 of what defines a case's training data: id, geometry, positives (masks included), negatives."""
    h = hashlib.sha256()
    v = case.volume
    h.update(repr((case.case_id, v.shape, v.spacing_zyx_mm, v.origin_xyz_mm, np.round(v.direction, 6).tolist())).encode())
    for les in case.lesions:
        h.update(repr((tuple(float(c) for c in les.centre_xyz_mm), float(les.diameter_mm))).encode())
        if les.mask is not None:
            h.update(repr((les.mask.shape, tuple(int(o) for o in les.mask_origin_zyx))).encode())
            h.update(np.packbits(np.asarray(les.mask, bool)).tobytes())
    h.update(np.asarray(case.hard_negatives_xyz_mm, float).reshape(-1, 3).round(4).tobytes())
    return h.hexdigest()


def validate_case(case: LabelledCase) -> None:
    """Raise ``ValueError`` saying what is wrong with a labelled case (nothing is built from bad input)."""
    who = f"case {case.case_id!r}"
    if not isinstance(case.volume, Volume) or case.volume.hu.ndim != 3 or min(case.volume.shape) < 1:
        raise ValueError(f"{who}: volume must be an ml.volumes.Volume with a 3-D HU array")
    if not np.all(np.asarray(case.volume.spacing_zyx_mm) > 0):
        raise ValueError(f"{who}: spacing must be positive, got {case.volume.spacing_zyx_mm}")
    shape = np.asarray(case.volume.shape)

    def inside(xyz, what):
        p = np.asarray(xyz, float)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"{who}: {what} must be 3 finite numbers (x, y, z mm), got {xyz!r}")
        v = case.volume.patient_to_voxel(p)
        if np.any(v < -0.5) or np.any(v > shape - 0.5):
            raise ValueError(f"{who}: {what} {tuple(np.round(p, 1))} mm lies outside the volume")

    for i, les in enumerate(case.lesions):
        inside(les.centre_xyz_mm, f"lesion {i} centre")
        if not (np.isfinite(les.diameter_mm) and les.diameter_mm > 0):
            raise ValueError(f"{who}: lesion {i} diameter must be > 0 mm, got {les.diameter_mm!r}")
        if les.mask is not None:
            m = np.asarray(les.mask)
            if m.ndim != 3 or m.dtype != bool:
                raise ValueError(f"{who}: lesion {i} mask must be a 3-D bool array, got {m.dtype} {m.shape}")
            if not m.any():
                raise ValueError(f"{who}: lesion {i} mask is empty")
            if les.mask_origin_zyx is None or len(les.mask_origin_zyx) != 3:
                raise ValueError(f"{who}: lesion {i} has a mask but no mask_origin_zyx")
    for i, p in enumerate(case.hard_negatives_xyz_mm):
        inside(p, f"hard negative {i}")


def _grown_box(volume: Volume, points_mm: list, radii_mm: list) -> tuple[np.ndarray, np.ndarray]:
    """The lung box grown to hold every labelled point with its radius + ``BOX_MARGIN_MM``."""
    start, stop = lung_box(volume)
    spacing = np.asarray(volume.spacing_zyx_mm)
    for p, r in zip(points_mm, radii_mm):
        v = volume.patient_to_voxel(np.asarray(p, float))
        ext = (r + BOX_MARGIN_MM) / spacing
        start = np.minimum(start, np.floor(v - ext).astype(int))
        stop = np.maximum(stop, np.ceil(v + ext).astype(int) + 1)
    shape = np.asarray(volume.shape)
    return np.clip(start, 0, shape), np.clip(stop, 0, shape)


def hu_lung_mask(det_hu: np.ndarray) -> np.ndarray:
    """Lungs on the 2 mm grid from HU alone: air not touching the in-plane border, holes filled per slice."""
    lung = coarse_lung_mask(det_hu, (1, 1, 1), DET_SPACING_MM ** 3 / 1000.0)
    return np.stack([ndimage.binary_fill_holes(s) for s in lung]) if lung.size else lung


def _sample(points: np.ndarray, rng: np.random.Generator, n: int = N_SAMPLE_POINTS) -> np.ndarray:
    if len(points) > n:
        points = points[np.sort(rng.choice(len(points), n, replace=False))]
    return np.asarray(points).astype(np.int16).reshape(-1, 3)


def _far_from(points_zyx: np.ndarray, centres_zyx: np.ndarray, min_mm: np.ndarray) -> np.ndarray:
    """Rows of ``points_zyx`` (det voxels) farther than ``min_mm[k]`` from every ``centres_zyx[k]``."""
    keep = np.ones(len(points_zyx), bool)
    for c, r in zip(centres_zyx, min_mm):
        keep &= np.linalg.norm((points_zyx - c) * DET_SPACING_MM, axis=1) > r
    return keep


def _label_cube(volume: Volume, offset: np.ndarray, lesions: list[LabelledLesion]) -> np.ndarray:
    """Union of the positives on a ``SEG_CACHE``^3 cube at 1 mm whose voxel 0 is source voxel ``offset``."""
    scale = SEG_SPACING_MM / np.asarray(volume.spacing_zyx_mm)
    lo, hi = offset, offset + (SEG_CACHE - 1) * scale                       # cube extent in source voxels
    label = np.zeros((SEG_CACHE,) * 3, bool)
    grid_mm = None
    for les in lesions:
        if les.mask is not None:
            o = np.asarray(les.mask_origin_zyx, float) - 1       # one voxel of zeros around the box, so the
            if np.any(o > hi) or np.any(o + np.asarray(les.mask.shape) + 1 < lo):   # edge interpolates as on
                continue                                                           # the whole grid
            box = np.pad(les.mask.astype(np.float32), 1)
            label |= resample_array(box, volume.spacing_zyx_mm, (SEG_SPACING_MM,) * 3, label.shape,
                                    offset_zyx=offset - o, order=1, cval=0.0) >= 0.5
        else:
            if grid_mm is None:
                idx = np.stack(np.meshgrid(*[np.arange(SEG_CACHE, dtype=np.float32)] * 3, indexing="ij"), -1)
                grid_mm = volume.voxel_to_patient(offset + idx * scale)
            label |= np.linalg.norm(grid_mm - np.asarray(les.centre_xyz_mm, float), axis=-1) <= les.diameter_mm / 2
    return label


def build_case_from_labels(case: LabelledCase) -> dict:
    """A labelled case -> the cached-case dict of :func:`ml.training.data.build_case` (see the module doc)."""
    validate_case(case)
    volume = case.volume
    rng = np.random.default_rng([stable_seed(case.case_id), 7])
    pos_mm = np.array([les.centre_xyz_mm for les in case.lesions], float).reshape(-1, 3)
    radii = np.array([les.diameter_mm / 2 for les in case.lesions], float)
    neg_mm = np.asarray(case.hard_negatives_xyz_mm, float).reshape(-1, 3)
    start, stop = _grown_box(volume, [*pos_mm, *neg_mm], [*radii, *np.zeros(len(neg_mm))])
    det = resample(volume.crop(start, stop), (DET_SPACING_MM,) * 3)
    det_hu = np.rint(np.clip(det.hu, -32768, 32767)).astype(np.int16)
    pos_det = det.patient_to_voxel(pos_mm).reshape(-1, 3)

    # rejected findings inside a positive contradict it: the positive wins
    conflict = np.array([np.any(np.linalg.norm(pos_mm - p, axis=1) < radii + CONFLICT_MARGIN_MM) for p in neg_mm], bool)
    neg_mm = neg_mm[~conflict]
    neg_det = det.patient_to_voxel(neg_mm).reshape(-1, 3)
    neg_vox = np.clip(np.rint(neg_det), 0, np.asarray(det.shape) - 1).astype(np.int16)

    lung = hu_lung_mask(det_hu)
    lung_zyx = _sample(np.argwhere(lung), rng)
    inner = ndimage.binary_erosion(lung) & (det_hu > BRIGHT_HU)
    bright = np.argwhere(inner)
    bright = bright[_far_from(bright, pos_det, radii + 4.0)]
    bright = _sample(bright, rng)
    if len(neg_vox):
        reps = max(1, int(np.ceil(len(bright) * HARD_NEGATIVE_SHARE / (1 - HARD_NEGATIVE_SHARE) / len(neg_vox))))
        vessel_zyx = np.concatenate([np.tile(neg_vox, (reps, 1)), bright]).astype(np.int16)
    else:
        vessel_zyx = bright

    seg_centres = [np.asarray(c) for c in pos_mm]
    seg_centres += list(neg_mm[:MAX_SEG_NEGATIVES])
    far = bright[_far_from(bright, pos_det, np.full(len(pos_det), FAR_FROM_POSITIVE_MM))]
    if len(far):
        seg_centres.append(det.voxel_to_patient(far[rng.integers(len(far))].astype(float)))
    hus, labels = [], []
    for c in seg_centres:
        hu, offset = seg_cube(volume, c, SEG_CACHE)
        hus.append(np.rint(np.clip(hu, -32768, 32767)).astype(np.int16))
        labels.append(_label_cube(volume, offset, case.lesions))
    n_seg = len(hus)
    return {"det_hu": det_hu,
            "lesions": np.array([[*p, les.diameter_mm] for p, les in zip(pos_det, case.lesions)], np.float32).reshape(-1, 4),
            "vessel_zyx": vessel_zyx.reshape(-1, 3), "lung_zyx": lung_zyx,
            "seg_hu": np.array(hus, np.int16).reshape(n_seg, *(SEG_CACHE,) * 3),
            "seg_label": np.array(labels, bool).reshape(n_seg, *(SEG_CACHE,) * 3),
            "seg_is_lesion": np.arange(n_seg) < len(case.lesions),
            "seed": np.int64(stable_seed(case.case_id)), "preset": np.array("review"),
            "case_id": np.array(case.case_id), "hard_negative_zyx": neg_det.astype(np.float32),
            "n_hard_negatives_dropped": np.int64(conflict.sum()),
            "det_origin_xyz_mm": np.asarray(det.origin_xyz_mm, float), "det_direction": det.direction.copy()}


# -- samplers over several data sets --------------------------------------------------------------


class MixedSampler:
    """Each item of a batch comes from one of several samplers, picked with fixed probabilities.

    ``parts``: ``[(sample(rng, batch) -> tuple of arrays, weight), ...]``; zero-weight or ``None``
    samplers are skipped. Deterministic for a generator (the pick and the item use the same ``rng``).
    """

    def __init__(self, parts: list[tuple]):
        parts = [(s, float(w)) for s, w in parts if s is not None and w > 0]
        if not parts:
            raise ValueError("no data to sample from")
        self.samplers = [s for s, _ in parts]
        w = np.array([w for _, w in parts])
        self.p = w / w.sum()

    def sample(self, rng: np.random.Generator, batch: int):
        picks = rng.choice(len(self.samplers), size=batch, p=self.p)
        items = [self.samplers[k](rng, 1) for k in picks]
        return tuple(np.concatenate([it[i] for it in items]) for i in range(len(items[0])))

