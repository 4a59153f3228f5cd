"""Ground truth files beside a written study.

``ground_truth.json``: format/version, seed, full config, geometry (shape, spacing,
origin, direction, slice thickness), acquisition and anatomy draws, the lesions in
patient mm, and optionally the DICOM identifiers of the series it describes.
``label_mask.npz`` (compressed): ``label_mask`` uint16 (Z, Y, X), ``lung_mask`` bool
(Z, Y, X), ``vessels`` float32 (M, 8) tube segments in patient mm.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PhantomConfig
from .phantom import Geometry, Lesion, Phantom

FORMAT = "radloop-phantom-ground-truth"
VERSION = 1
JSON_NAME = "ground_truth.json"
MASK_NAME = "label_mask.npz"


def _plain(value):
    """Make numpy scalars/arrays JSON-serialisable."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_ground_truth(ph: Phantom, out_dir, *, dicom: dict | None = None) -> Path:
    """Write ``ground_truth.json`` and ``label_mask.npz`` into ``out_dir``; returns the JSON path.

    ``dicom``: optional identifiers of the written series (patient_id, study_uid, series_uid, ...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT, "version": VERSION, "seed": ph.seed, "config": ph.config.to_dict(),
        "geometry": {
            "shape_zyx": list(ph.shape_zyx), "spacing_zyx_mm": list(ph.spacing_zyx_mm),
            "origin_xyz_mm": list(ph.origin_xyz_mm), "direction": np.asarray(ph.direction).tolist(),
            "slice_thickness_mm": ph.slice_thickness_mm, "axis_order": "zyx",
            "patient_frame": "LPS; x = ox + col*dx, y = oy + row*dy, z = oz + slice*dz",
        },
        "acquisition": ph.acquisition, "anatomy": ph.anatomy,
        "lesions": [lesion.to_dict() for lesion in ph.lesions],
        "dicom": dicom or {}, "mask_file": MASK_NAME,
    }
    np.savez_compressed(out / MASK_NAME, label_mask=ph.label_mask, lung_mask=ph.lung_mask, vessels=ph.vessels)
    path = out / JSON_NAME
    path.write_text(json.dumps(_plain(doc), indent=2))
    return path


@dataclass
class GroundTruth(Geometry):
    """Ground truth loaded from disk. Masks are (Z, Y, X); coordinates patient LPS mm."""

    seed: int
    config: PhantomConfig
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: np.ndarray
    slice_thickness_mm: float
    lesions: list[Lesion]
    acquisition: dict = field(default_factory=dict)
    dicom: dict = field(default_factory=dict)
    label_mask: np.ndarray | None = None
    lung_mask: np.ndarray | None = None
    vessels: np.ndarray | None = None


def load_ground_truth(path, *, masks: bool = True) -> GroundTruth:
    """Load ground truth from a ``ground_truth.json`` path or the folder holding it.

    ``masks=False`` skips reading ``label_mask.npz``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a RadLoop phantom ground truth file")
    geo = doc["geometry"]
    gt = GroundTruth(
        seed=int(doc["seed"]), config=PhantomConfig.from_dict(doc["config"]),
        shape_zyx=tuple(geo["shape_zyx"]), spacing_zyx_mm=tuple(geo["spacing_zyx_mm"]),
        origin_xyz_mm=tuple(geo["origin_xyz_mm"]), direction=np.asarray(geo["direction"], float),
        slice_thickness_mm=float(geo["slice_thickness_mm"]),
        lesions=[Lesion.from_dict(d) for d in doc["lesions"]], acquisition=doc.get("acquisition", {}),
        dicom=doc.get("dicom", {}))
    if masks:
        with np.load(path.parent / doc.get("mask_file", MASK_NAME)) as npz:
            gt.label_mask, gt.lung_mask, gt.vessels = npz["label_mask"], npz["lung_mask"], npz["vessels"]
    return gt
