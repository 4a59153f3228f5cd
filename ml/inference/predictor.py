"""``Predictor``: model file -> findings on a :class:`ml.volumes.Volume`. All a worker needs.

Pipeline: lung box (HU threshold, strided) -> crop -> resample to the detector spacing (2 mm) ->
sliding-window detector -> peaks + distance NMS -> for each finding a 1 mm cube -> segmenter ->
probabilities mapped back (trilinear) onto the ORIGINAL grid, thresholded, the component at the
finding kept -> measurements in patient mm. Test-time augmentation (flips / in-plane rot90) is
optional; the spread of its outputs gives per-finding and per-case uncertainty.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import load_model_file, unpack_model
from ..preprocessing import lung_box, normalise_hu
from ..transforms import apply_array, invert_array, tta_transforms
from ..volumes import Volume, resample
from .detection import decode, nms_by_distance
from .measure import measure, sphere_mask
from .rescoring import Rescorer, features
from .segmentation import component_at, cube_probabilities, dice, to_original_grid
from .sliding import sliding_window

TTA_COUNT = 4


@dataclass
class Finding:
    """One nodule. Coordinates in patient LPS mm; ``mask`` bool (z, y, x) sub-box of the ORIGINAL
    volume grid starting at voxel ``mask_origin_zyx``. ``segmented`` is False when the segmenter
    found nothing and the mask is a ball of the detector's diameter. ``score``: the model file's
    rescorer (:mod:`.rescoring`) over ``features`` when it has one, else the detector's heat-map peak
    combined with the segmenter's mean probability over the mask (:func:`combined_score`); both parts
    are kept. ``flagged``: the score reaches the model's operating point (all findings when it has none)."""

    centre_xyz_mm: tuple[float, float, float]
    bbox_min_xyz_mm: tuple[float, float, float]
    bbox_max_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    long_axis_mm: float
    short_axis_mm: float
    volume_ml: float
    mean_hu: float
    score: float
    uncertainty: float | None
    mask: np.ndarray
    mask_origin_zyx: tuple[int, int, int]
    detector_diameter_mm: float = 0.0
    segmented: bool = True
    detector_score: float = 0.0
    segmentation_confidence: float = 0.0
    features: np.ndarray | None = None
    flagged: bool = True          # at or above the model's operating point (see ml.fpr); else a candidate


@dataclass
class Prediction:
    findings: list[Finding]
    case_uncertainty: float | None
    timings: dict[str, float]
    device: str
    model_version: str = ""
    extra: dict = field(default_factory=dict)


class Predictor:
    """Detector + segmenter rebuilt from one model file (see :mod:`ml.checkpoint`)."""

    def __init__(self, payload: dict, device=None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.detector = unpack_model(payload["models"]["detector"]).to(self.device)
        self.segmenter = unpack_model(payload["models"]["segmenter"]).to(self.device)
        self.settings = dict(payload["inference"])
        rescoring = self.settings.get("rescoring")
        self.rescorer = Rescorer.from_dict(rescoring) if rescoring else None
        self.version = str(payload["version"])
        self.metadata = {k: v for k, v in payload.items() if k != "models"}
        self.metadata["networks"] = {k: {"class": v["class"], "config": v["config"]}
                                     for k, v in payload["models"].items()}

    @classmethod
    def from_checkpoint(cls, path, device=None) -> "Predictor":
        return cls(load_model_file(Path(path)), device)

    def _forward(self, net, timings: dict, key: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """``net`` as a callable that adds its bare forward time (synchronised on CUDA) to ``timings[key]``."""
        amp = self.device.type == "cuda"
        timings.setdefault(key, 0.0)

        def run(x: torch.Tensor) -> torch.Tensor:
            t = time.perf_counter()
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                y = net(x).float()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            timings[key] += time.perf_counter() - t
            return y
        return run

    def predict(self, volume: Volume, tta: bool = False, progress: Callable[[float, str], None] | None = None) -> Prediction:
        """Findings on ``volume`` (any orientation; HU). ``progress(fraction, stage)`` is called as work advances."""
        report = progress or (lambda f, s: None)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # ``det_tta`` (model setting): the detector's heat map is averaged over that many transforms even
        # without ``tta`` (steadier scores for faint nodules); ``tta`` also averages the segmenter and
        # turns the transforms' disagreement into uncertainty.
        seg_transforms = tta_transforms(TTA_COUNT if tta else 1)
        det_transforms = tta_transforms(max(len(seg_transforms), int(self.settings.get("det_tta", 1))))
        report(0.0, "preprocess")
        det_volume = self._prepare(volume, timings)
        heats, reg = self._detect(det_volume, det_transforms, timings, report)
        report(0.6, "segment")
        t = time.perf_counter()
        findings = self._findings(volume, det_volume, heats, reg, seg_transforms, timings)
        timings["segment"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        report(1.0, "done")
        case_unc = (max([f.uncertainty for f in findings], default=0.0) if tta else None)
        return Prediction(findings, case_unc, timings, str(self.device), self.version)

    def _prepare(self, volume: Volume, timings: dict) -> Volume:
        t = time.perf_counter()
        start, stop = lung_box(volume)
        timings["lung_box"] = time.perf_counter() - t
        t = time.perf_counter()
        det = resample(volume.crop(start, stop), (self.settings["det_spacing_mm"],) * 3)
        timings["resample"] = time.perf_counter() - t
        return det

    def _detect(self, det_volume: Volume, transforms, timings: dict, report):
        t = time.perf_counter()
        image = normalise_hu(det_volume.hu)
        heats, reg = [], None
        for i, tr in enumerate(transforms):
            out = sliding_window(apply_array(image, tr)[None], self._forward(self.detector, timings, "detector_net"), self.settings["det_window"],
                                 overlap=self.settings["det_overlap"], divisor=self.detector.config.divisor,
                                 device=self.device,
                                 progress=lambda f, i=i: report(0.05 + 0.55 * (i + f) / len(transforms), "detect"))
            heats.append(1.0 / (1.0 + np.exp(-invert_array(out[0], tr))))
            if i == 0:
                reg = out[1:]
        timings["detect"] = time.perf_counter() - t
        return np.stack(heats), reg

    def _candidates(self, det_volume: Volume, heats: np.ndarray, reg: np.ndarray):
        heat = heats.mean(0)
        limit = self.settings.get("max_candidates", self.settings["max_findings"])
        cands = decode(heat, reg, threshold=self.settings["score_threshold"], max_candidates=3 * limit)
        if not cands:
            return [], []
        centres = det_volume.voxel_to_patient(np.array([c.centre_zyx for c in cands]))
        keep = nms_by_distance(centres, np.array([c.diameter_mm for c in cands]), np.array([c.score for c in cands]),
                               self.settings["nms_distance_factor"])[:limit]
        spread = [float(heats[:, c.peak_zyx[0], c.peak_zyx[1], c.peak_zyx[2]].std()) for c in cands]
        return [cands[k] for k in keep], [(centres[k], spread[k]) for k in keep]

    def _findings(self, volume: Volume, det_volume: Volume, heats, reg, transforms, timings) -> list[Finding]:
        cands, places = self._candidates(det_volume, heats, reg)
        if not cands:
            timings.setdefault("segmenter_net", 0.0)
            return []
        t = time.perf_counter()
        spacing, size = self.settings["seg_spacing_mm"], self.settings["seg_patch"]
        forward = self._forward(self.segmenter, timings, "segmenter_net")
        probs, offsets = cube_probabilities(volume, [p[0] for p in places], forward, size=size,
                                            spacing_mm=spacing, transforms=transforms, device=self.device)
        timings["segment_cubes"] = time.perf_counter() - t
        tta = len(transforms) > 1
        findings = [self._finding(volume, cand, place, probs[i], offsets[i], tta) for i, (cand, place) in
                    enumerate(zip(cands, places))]
        return _drop_duplicates(findings, volume)[:self.settings["max_findings"]]

    def _finding(self, volume: Volume, cand, place, probs: np.ndarray, offset, tta: bool) -> Finding:
        centre_mm, spread = place
        thr = self.settings["seg_threshold"]
        sub, origin = to_original_grid(probs.mean(0), offset, volume, self.settings["seg_spacing_mm"])
        sub_origin = origin
        centre_sub = volume.patient_to_voxel(centre_mm) - origin
        radius_vox = (cand.diameter_mm / 2 + 3.0) / min(volume.spacing_zyx_mm)
        mask = component_at(sub >= thr, centre_sub, radius_vox)
        segmented = bool(mask.any())
        if not segmented:
            mask, origin = sphere_mask(volume, centre_mm, cand.diameter_mm)
        mask, origin = _tight(mask, origin)
        seg_conf = float(_mean_prob(sub, origin - np.asarray(sub_origin), mask)) if segmented else 0.0
        m = measure(mask, origin, volume)
        x = features(detector_score=cand.score, segmentation_confidence=seg_conf, segmented=segmented,
                     diameter_mm=m["diameter_mm"], detector_diameter_mm=cand.diameter_mm,
                     long_axis_mm=m["long_axis_mm"], short_axis_mm=m["short_axis_mm"], volume_ml=m["volume_ml"],
                     mean_hu=m["mean_hu"], centre_xyz_mm=m["centre_xyz_mm"], volume=volume)
        if self.rescorer is not None:
            score = float(self.rescorer(x)[0])
        else:
            score = combined_score(cand.score, seg_conf, self.settings.get("score_mode", "detector_x_segmenter"))
        uncertainty = None
        if tta:
            masks = [to_original_grid(p, offset, volume, self.settings["seg_spacing_mm"])[0] >= thr for p in probs]
            agreement = np.mean([dice(mk, masks[0]) for mk in masks[1:]]) if segmented else 0.0
            uncertainty = float(np.clip(0.5 * min(1.0, 4 * spread) + 0.5 * (1 - agreement), 0.0, 1.0))
        return Finding(
            centre_xyz_mm=m["centre_xyz_mm"], bbox_min_xyz_mm=m["bbox_min_xyz_mm"], bbox_max_xyz_mm=m["bbox_max_xyz_mm"],
            diameter_mm=m["diameter_mm"], long_axis_mm=m["long_axis_mm"], short_axis_mm=m["short_axis_mm"],
            volume_ml=m["volume_ml"], mean_hu=m["mean_hu"], score=score, uncertainty=uncertainty,
            mask=mask, mask_origin_zyx=tuple(int(v) for v in origin), detector_diameter_mm=cand.diameter_mm,
            segmented=segmented, detector_score=float(cand.score), segmentation_confidence=seg_conf, features=x,
            flagged=score >= self.settings.get("operating_point", {}).get("score", 0.0))


def combined_score(detector_score: float, segmentation_confidence: float, mode: str) -> float:
    """Finding score in [0, 1]. ``detector_x_segmenter``: sqrt(detector * max(segmenter, 0.05)) -- the
    segmenter, trained with vessel negatives, acts as a second-stage false-positive filter;
    ``detector``: the heat-map peak alone."""
    if mode == "detector":
        return float(detector_score)
    return float(np.sqrt(detector_score * max(segmentation_confidence, 0.05)))


def _mean_prob(prob_sub: np.ndarray, shift, mask: np.ndarray) -> float:
    """Mean of ``prob_sub`` over ``mask`` placed at offset ``shift`` inside it."""
    z, y, x = (int(v) for v in shift)
    return float(prob_sub[z:z + mask.shape[0], y:y + mask.shape[1], x:x + mask.shape[2]][mask].mean())


def _drop_duplicates(findings: list[Finding], volume: Volume) -> list[Finding]:
    """Drop a finding whose centre lies inside the mask of a better-scored one (same nodule twice)."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: -f.score):
        c = np.rint(volume.patient_to_voxel(f.centre_xyz_mm)).astype(int)
        if not any(_inside(c, k) for k in kept):
            kept.append(f)
    return kept


def _inside(voxel_zyx: np.ndarray, f: Finding) -> bool:
    local = voxel_zyx - np.asarray(f.mask_origin_zyx)
    return bool(np.all(local >= 0) and np.all(local < f.mask.shape) and f.mask[tuple(local)])


def _tight(mask: np.ndarray, origin) -> tuple[np.ndarray, np.ndarray]:
    """Crop a mask sub-box to its bounding box (origin shifted accordingly)."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    return mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].copy(), np.asarray(origin) + lo
