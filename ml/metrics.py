"""The field's metrics: FROC / CPM for detection; Dice, HD95, volume difference for segmentation.

Metrics compare outputs with truth and never apply activations (scores are already in [0, 1]).

Detection follows LUNA16: a prediction *hits* a lesion when its centre lies within the lesion's
radius (mm) of the lesion centre; each lesion counts once (with its best hitting score); further
hits on a hit lesion are ignored (neither true nor false positives); predictions hitting no
lesion are false positives. Lesions excluded by a filter (e.g. another size bucket) are
"irrelevant": hits on them are ignored too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CPM_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class DetectionCase:
    """One scan: predicted centres (N, 3) mm + scores (N,), lesion centres (M, 3) mm + diameters (M,) mm."""

    pred_xyz_mm: np.ndarray
    scores: np.ndarray
    lesion_xyz_mm: np.ndarray
    lesion_diameter_mm: np.ndarray


@dataclass
class Froc:
    """FROC curve: ``fp_per_scan[i]``, ``sensitivity[i]`` at score threshold ``thresholds[i]`` (descending)."""

    thresholds: np.ndarray
    fp_per_scan: np.ndarray
    sensitivity: np.ndarray
    n_lesions: int
    n_scans: int

    def sensitivity_at(self, fp_rate: float) -> float:
        """Best sensitivity reachable with at most ``fp_rate`` false positives per scan."""
        ok = self.fp_per_scan <= fp_rate + 1e-12
        return float(self.sensitivity[ok].max()) if ok.any() else 0.0

    def cpm(self, fp_rates=CPM_FP_RATES) -> float:
        """Competition performance metric: mean sensitivity at the LUNA16 FP rates."""
        return float(np.mean([self.sensitivity_at(r) for r in fp_rates]))


def _match(case: DetectionCase, relevant: np.ndarray):
    """Per prediction: index of the nearest lesion it hits (-1 none). Returns (hit_index (N,), dist)."""
    pred = np.asarray(case.pred_xyz_mm, float).reshape(-1, 3)
    les = np.asarray(case.lesion_xyz_mm, float).reshape(-1, 3)
    if len(les) == 0 or len(pred) == 0:
        return np.full(len(pred), -1), relevant
    d = np.linalg.norm(pred[:, None, :] - les[None, :, :], axis=-1)          # (N, M) mm
    inside = d <= np.asarray(case.lesion_diameter_mm, float)[None, :] / 2
    d = np.where(inside, d, np.inf)
    hit = np.where(inside.any(1), d.argmin(1), -1)
    return hit, relevant


def froc(cases: list[DetectionCase], lesion_filter=None) -> Froc:
    """FROC over ``cases``. ``lesion_filter(diameter_mm) -> bool`` selects the lesions that count."""
    lesion_scores, fp_scores, n_lesions = [], [], 0
    for case in cases:
        diam = np.asarray(case.lesion_diameter_mm, float).reshape(-1)
        relevant = np.array([lesion_filter(d) if lesion_filter else True for d in diam], bool)
        hit, _ = _match(case, relevant)
        scores = np.asarray(case.scores, float).reshape(-1)
        n_lesions += int(relevant.sum())
        best = np.full(len(diam), -np.inf)
        for s, h in zip(scores, hit):
            if h < 0:
                fp_scores.append(s)
            else:
                best[h] = max(best[h], s)
        lesion_scores += [b for b, r in zip(best, relevant) if r]
    lesion_scores, fp_scores = np.asarray(lesion_scores), np.asarray(fp_scores)
    thresholds = np.unique(np.concatenate([lesion_scores[np.isfinite(lesion_scores)], fp_scores]))[::-1]
    n_scans = max(len(cases), 1)
    sens = np.array([(lesion_scores >= t).sum() / max(n_lesions, 1) for t in thresholds])
    fps = np.array([(fp_scores >= t).sum() / n_scans for t in thresholds])
    thresholds = np.concatenate([[np.inf], thresholds])
    return Froc(thresholds, np.concatenate([[0.0], fps]), np.concatenate([[0.0], sens]), n_lesions, n_scans)


# -- segmentation ------------------------------------------------------------------------------


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks of the same shape; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_zyx_mm) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between mask surfaces.

    max(95th percentile of pred-surface -> truth-surface distances, and the reverse), as in MONAI.
    0 when both are empty, inf when exactly one is.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float("inf")
    sp, st = _surface(pred), _surface(truth)
    dist_to_truth = ndimage.distance_transform_edt(~st, sampling=spacing_zyx_mm)
    dist_to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx_mm)
    return float(max(np.percentile(dist_to_truth[sp], 95), np.percentile(dist_to_pred[st], 95)))


def volume_difference_ml(pred: np.ndarray, truth: np.ndarray, voxel_volume_ml: float) -> float:
    """Absolute volume difference in mL between two masks on the same grid."""
    return float(abs(int(np.asarray(pred, bool).sum()) - int(np.asarray(truth, bool).sum())) * voxel_volume_ml)


SIZE_BUCKETS_MM = ((3.0, 6.0), (6.0, 10.0), (10.0, 20.0), (20.0, 30.0))


def in_bucket(lo: float, hi: float):
    """Filter for :func:`froc`: lo <= diameter < hi (the last bucket includes 30 mm)."""
    return lambda d: lo <= d < hi or (hi >= 30.0 and d == hi)
