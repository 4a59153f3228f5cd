"""Second-stage false-positive reduction: a logistic model over what is known about each candidate.

The detector's heat map finds nearly every nodule, but at a low operating point it cannot tell a
small nodule from a vessel seen end-on. After segmentation each candidate carries much more: the
segmenter's confidence, the shape of its mask (a vessel is long and thin, a nodule compact), how its
surroundings look (a vessel runs on through a shell around it; an isolated nodule sits in lung), and
whether the detector's and segmenter's sizes agree. :func:`features` turns one candidate into a fixed
vector of such quantities, all in physical units (mm, HU), none normalised per image;
:class:`Rescorer` is a logistic regression over them, fitted by :func:`fit` on candidates from
phantoms that neither training nor evaluation uses (``python -m ml.fpr``), and stored in the model
file's inference settings. Pure numpy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..volumes import Volume

FEATURES = ("detector_logit", "segmenter_confidence", "segmented", "log_diameter", "log_size_ratio",
            "elongation", "fill", "mean_hu", "shell_dense", "shell_mean_hu")

SHELL_MM = (1.5, 4.5)      # the shell around a candidate: this far beyond its radius
DENSE_HU = -500.0          # shell voxels above this are tissue (vessel, pleura, another nodule)


def features(*, detector_score: float, segmentation_confidence: float, segmented: bool, diameter_mm: float,
             detector_diameter_mm: float, long_axis_mm: float, short_axis_mm: float, volume_ml: float,
             mean_hu: float, centre_xyz_mm, volume: Volume) -> np.ndarray:
    """The candidate's feature vector, in the order of :data:`FEATURES`."""
    p = float(np.clip(detector_score, 1e-4, 1 - 1e-4))
    long_axis = max(long_axis_mm, 0.5)
    sphere_of_long = np.pi / 6 * long_axis ** 3 / 1000.0        # mL
    shell_dense, shell_hu = shell_stats(volume, centre_xyz_mm, diameter_mm / 2)
    return np.array([
        np.log(p / (1 - p)),
        segmentation_confidence,
        float(segmented),
        np.log(max(diameter_mm, 1.0)),
        np.log(max(diameter_mm, 1.0) / max(detector_diameter_mm, 1.0)),
        min(long_axis / max(short_axis_mm, 0.5), 6.0),
        min(volume_ml / sphere_of_long, 1.5),
        np.clip(mean_hu, -1000, 400) / 1000.0,
        shell_dense,
        np.clip(shell_hu, -1000, 400) / 1000.0,
    ])


def shell_stats(volume: Volume, centre_xyz_mm, radius_mm: float) -> tuple[float, float]:
    """Share of tissue (> ``DENSE_HU``) and mean HU in a shell ``SHELL_MM`` beyond ``radius_mm``."""
    inner, outer = radius_mm + SHELL_MM[0], radius_mm + SHELL_MM[1]
    spacing = np.asarray(volume.spacing_zyx_mm, float)
    c = volume.patient_to_voxel(np.asarray(centre_xyz_mm, float))
    r_vox = outer / spacing
    lo = np.clip(np.floor(c - r_vox).astype(int), 0, volume.shape)
    hi = np.clip(np.ceil(c + r_vox).astype(int) + 1, lo, volume.shape)
    if np.any(hi <= lo):
        return 0.0, -1000.0
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    dist = np.linalg.norm((grid - c) * spacing, axis=-1)   # index space is orthogonal: mm via spacing
    shell = (dist >= inner) & (dist <= outer)
    if not shell.any():
        return 0.0, -1000.0
    hu = volume.hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][shell]
    return float((hu > DENSE_HU).mean()), float(hu.mean())


@dataclass
class Rescorer:
    """p(nodule | features) = sigmoid(weights . (x - mean) / scale + bias)."""

    features: tuple[str, ...]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.weights) + self.bias)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Rescorer":
        if tuple(d["features"]) != FEATURES:
            raise ValueError(f"rescorer features {d['features']} do not match this code's {list(FEATURES)}")
        return cls(tuple(d["features"]), list(d["mean"]), list(d["scale"]), list(d["weights"]), float(d["bias"]))


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> Rescorer:
    """L2-regularised logistic regression by Newton's method on standardised features."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-6] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0                                               # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + reg * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Rescorer(FEATURES, mean.tolist(), scale.tolist(), w[:-1].tolist(), float(w[-1]))
