"""Decode the detector's CenterNet outputs into candidate nodules; distance-based NMS."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Candidate:
    """A detection on the detection grid: ``centre_zyx`` in det voxels (continuous), ``diameter_mm``."""

    score: float
    centre_zyx: np.ndarray
    diameter_mm: float
    peak_zyx: tuple[int, int, int]


def decode(heat: np.ndarray, reg: np.ndarray, *, threshold: float, max_candidates: int) -> list[Candidate]:
    """``heat`` (Z, Y, X) probabilities, ``reg`` (4, Z, Y, X) = (log diameter_mm, offset z, y, x).

    Local maxima (3x3x3) above ``threshold``, best ``max_candidates`` first.
    """
    peaks = (heat == ndimage.maximum_filter(heat, size=3, mode="constant", cval=0.0)) & (heat >= threshold)
    idx = np.argwhere(peaks)
    scores = heat[peaks]
    order = np.argsort(-scores, kind="stable")[:max_candidates]
    out = []
    for k in order:
        p = tuple(int(v) for v in idx[k])
        offset = np.clip(reg[1:, p[0], p[1], p[2]], -3.0, 3.0)
        diameter = float(np.exp(np.clip(reg[0, p[0], p[1], p[2]], np.log(2.0), np.log(40.0))))
        out.append(Candidate(float(scores[k]), np.asarray(p, float) + offset, diameter, p))
    return out


def nms_by_distance(centres_mm: np.ndarray, diameters_mm: np.ndarray, scores: np.ndarray, factor: float = 1.0) -> list[int]:
    """Indices kept, best score first: a candidate is dropped when its centre lies within
    ``factor * max(r_kept, r_candidate)`` mm of an already kept one."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept: list[int] = []
    for i in order:
        if all(np.linalg.norm(centres_mm[i] - centres_mm[j]) >= factor * max(diameters_mm[i], diameters_mm[j]) / 2
               for j in kept):
            kept.append(int(i))
    return kept
