"""Retraining from radiologists' corrections: fine-tune a model file on signed-off cases, and score models.

    finetune(parent, cases, out)          -> a new model file (child of ``parent``)
    evaluate_cases(model, cases)          -> FROC / CPM / Dice / HD95 / diameter and volume errors
    phantom_benchmark(model, n=8, seed=80000) -> the same dict on fixed phantoms (champion vs challenger)

Pure numpy/torch.

**What a fine-tune does.** Both networks start from the parent's weights. Training patches come from
two data sets: the review cases (:func:`build_case_from_labels`: accepted/added findings as positives,
rejected AI findings as hard negatives) and a fixed set of training phantoms (the same cached files as
``python -m ml.train``) so the model does not forget what it knew (anti-forgetting / rehearsal).
**Oversampling:** every patch is drawn from the review set with probability ``review_fraction``
(default 0.5) and from the phantoms otherwise, whatever the sizes of the two sets; with 10 review cases
and 28 phantoms a review case is sampled ~2.8x as often as a phantom. Inside each set the usual rules
hold: detection 50 % around a positive, 30 % on a hard negative or vessel-like voxel (for review cases
half of those on the radiologist's rejected findings), 20 % anywhere in the lungs; segmentation cubes
around positives, with a ``REVIEW_SEG_NEGATIVE`` share (review) / 15 % (phantoms) of negative cubes.
The learning rate is 1/5 of a from-scratch run (2e-4, 20 warm-up steps, cosine to 5 %).

**Determinism.** The batch of step ``i`` comes from ``default_rng([seed, i])`` (segmenter: ``seed + 1``)
and the parent's weights are the start, so a run is repeatable on one device; resumable state lives in
``cache_dir/finetune/<run key>/`` (the key covers the parent's SHA-256, the labels and every
hyper-parameter) and is deleted once the model file is written.

**Timing.** The defaults (``DET_STEPS`` = 120, ``SEG_STEPS`` = 90 steps of 4 patches of 48^3, 24 small +
4 full phantoms) keep a run on 10 new cases under 10 min on the shared 2-core CPU even when other jobs
hold it (measured there at ~2.5 s per detector and ~2.3 s per segmenter step, cache built cold in ~1 min;
~0.7 s per step on an idle machine); ``bench/finetune.py`` measures it.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .checkpoint import code_version, file_sha256, load_model_file, pack_model, save_model_file, unpack_model
from .evaluate import TARGET_RANGE_MM, _box_metrics
from .inference import Predictor
from .metrics import CPM_FP_RATES, DetectionCase, froc
from .phantom import PhantomConfig, generate_phantom
from .preprocessing import preprocessing_constants
from .training.data import TRAIN_SEED_FULL, TRAIN_SEED_SMALL, build_cache, load_cases
from .training.losses import detection_loss, dice_bce_loss
from .training.loop import TrainConfig, train_model
from .training.review import (LabelledCase, LabelledLesion, MixedSampler, build_case_from_labels,
                              label_fingerprint)
from .training.samplers import DET_PATCH, P_SEG_NEGATIVE, SEG_PATCH, DetectionSampler, SegmentationSampler
from .volumes import Volume

__all__ = ["LabelledLesion", "LabelledCase", "build_case_from_labels", "finetune", "evaluate_cases",
           "phantom_benchmark", "labelled_case_from_phantom"]

log = logging.getLogger("ml.finetune")

DET_STEPS = 120
SEG_STEPS = 90
LR = 2e-4
WARMUP_STEPS = 20
PHANTOM_PLAN = (("small", 24), ("full", 4))
REVIEW_FRACTION = 0.5
REVIEW_SEG_NEGATIVE = 0.3
PROGRESS_EVERY_S = 1.0
SEG_MIN_DIAMETER_MM = 6.0
# The promotion rule's fixed phantoms: disjoint from training (10000+/20000+), from the rescorer's
# calibration (30000+, ml.fpr) and from ml.evaluate's test set (90000+), which model selection never sees.
BENCHMARK_SEED_BASE = 80_000
PHANTOM_SEED_BASE = {"full": TRAIN_SEED_FULL}        # every other preset: TRAIN_SEED_SMALL + i


# -- fine-tuning ------------------------------------------------------------------------------------


def _phantom_plan(phantom_plan) -> tuple[list[tuple[str, int]], dict, dict]:
    """``(("small", n), ("full", m))`` -> the (preset, seed) list, counts and seed ranges per preset."""
    plan, counts, ranges = [], {}, {}
    for preset, n in phantom_plan:
        n = int(n)
        if n < 0:
            raise ValueError(f"phantom_plan: negative count for {preset!r}")
        PhantomConfig.preset(preset)                 # raises on an unknown preset
        base = PHANTOM_SEED_BASE.get(preset, TRAIN_SEED_SMALL) + counts.get(preset, 0)
        plan += [(preset, base + i) for i in range(n)]
        counts[preset] = counts.get(preset, 0) + n
        if counts[preset]:
            start = PHANTOM_SEED_BASE.get(preset, TRAIN_SEED_SMALL)
            ranges[preset] = [start, start + counts[preset] - 1]
    return plan, counts, ranges


class _Reporter:
    """Calls ``progress`` with the contract's dict, at most every ``PROGRESS_EVERY_S`` (first and last always)."""

    def __init__(self, progress: Callable[[dict], None] | None, t0: float):
        self.progress, self.t0, self.last, self.losses = progress, t0, -math.inf, []

    def __call__(self, stage: str, step: int, steps: int | None, loss=None, eta_s=None, **extra) -> None:
        now = time.monotonic()
        if self.progress is None:
            return
        if loss is not None:
            self.losses.append(float(loss))
        if step not in (0, 1) and step != steps and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        loss = float(np.mean(self.losses)) if self.losses else None     # mean over the steps since the last call
        self.losses = []
        self.progress({"stage": stage, "step": int(step), "steps": None if steps is None else int(steps),
                       "loss": loss,
                       "eta_s": None if eta_s is None else float(eta_s), "elapsed_s": now - self.t0, **extra})

    def stage(self, stage: str) -> Callable[[dict], None]:
        return lambda info: self(stage, info["step"], info["steps"], info["loss"], info["eta_s"], lr=info["lr"])


def pick_device(name: str | None = None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def finetune(parent_model: Path, cases: Iterable[LabelledCase], out: Path, *,
             phantom_plan=PHANTOM_PLAN, det_steps: int = DET_STEPS, seg_steps: int = SEG_STEPS, lr: float = LR,
             seed: int = 0, device: str | None = None, cache_dir: Path = Path("var/ml-cache"),
             progress: Callable[[dict], None] | None = None, batch: int = 4,
             review_fraction: float = REVIEW_FRACTION, workers: int = 1, det_patch: int = DET_PATCH,
             seg_patch: int = SEG_PATCH, resume: bool = True) -> Path:
    """Fine-tune the parent's detector and segmenter on ``cases`` mixed with phantoms; write ``out``.

    ``cases``: labelled cases (a list, or any iterable: each is turned into training arrays and not kept).
    ``phantom_plan``: (preset, count) pairs of training phantoms (seeds as in ``ml.train``; cached as
    ``.npz`` in ``cache_dir``, built with ``workers`` processes -- keep 1 inside a daemonic worker).
    ``progress(dict)``: ``{"stage": "data"|"detector"|"segmenter", "step", "steps", "loss", "eta_s",
    "elapsed_s"}`` at least every few seconds (``loss``: mean over the steps since the previous call, None
    in "data"; ``eta_s``: seconds left in the stage, None while unknown). An exception raised by
    ``progress`` aborts the run; re-running the same call resumes from the last checkpoint (every 50
    steps). Returns ``out``.
    """
    t0, started = time.monotonic(), _dt.datetime.now(_dt.timezone.utc)
    report = _Reporter(progress, t0)
    if not 0.0 < review_fraction <= 1.0:
        raise ValueError(f"review_fraction must be in (0, 1], got {review_fraction}")
    parent_path, out = Path(parent_model), Path(out)
    parent = load_model_file(parent_path)
    if {k: float(v) for k, v in parent["preprocessing"].items() if k in preprocessing_constants()} != preprocessing_constants():
        raise ValueError(f"{parent_path}: preprocessing constants differ from this code's; cannot fine-tune it")
    parent_info = {"version": str(parent["version"]), "code_version": str(parent.get("code_version", "")),
                   "sha256": file_sha256(parent_path), "file": parent_path.name,
                   "lineage": [*parent.get("parent", {}).get("lineage", []), str(parent["version"])]}
    device = pick_device(device)
    plan, counts, ranges = _phantom_plan(phantom_plan)

    # -- data -------------------------------------------------------------------------------------
    n_given = len(cases) if hasattr(cases, "__len__") else None
    total = None if n_given is None else n_given + len(plan)
    review, ids, prints, n_masks = [], [], [], 0
    report("data", 0, total)
    for case in cases:
        if case.case_id in ids:
            raise ValueError(f"case {case.case_id!r} given twice")
        review.append(build_case_from_labels(case))
        ids.append(case.case_id), prints.append(label_fingerprint(case))
        n_masks += sum(les.mask is not None for les in case.lesions)
        done = len(review)
        report("data", done, total, eta_s=None if n_given is None else (time.monotonic() - t0) / done * (n_given - done))
    if not review:
        raise ValueError("no labelled cases to fine-tune on")
    t_review = time.monotonic() - t0
    paths, t1 = [], time.monotonic()
    step = max(1, workers) * 2
    for i in range(0, len(plan), step):
        paths += build_cache(cache_dir, plan[i:i + step], workers=workers)
        done = i + len(plan[i:i + step])
        report("data", len(review) + done, len(review) + len(plan),
               eta_s=(time.monotonic() - t1) / done * (len(plan) - done))
    phantoms = load_cases(paths)
    t_data = time.monotonic() - t0
    n_review_lesions = sum(len(c["lesions"]) for c in review)
    n_phantom_lesions = sum(len(c["lesions"]) for c in phantoms)
    log.info("data: %d review cases (%d lesions, %.0f s), %d phantoms (%d lesions); %.0f s", len(review),
             n_review_lesions, t_review, len(phantoms), n_phantom_lesions, t_data)

    hyper = {"det_steps": det_steps, "seg_steps": seg_steps, "lr": lr, "seed": seed, "batch": batch,
             "review_fraction": review_fraction, "review_seg_negative": REVIEW_SEG_NEGATIVE,
             "det_patch": det_patch, "seg_patch": seg_patch, "warmup_steps": WARMUP_STEPS,
             "phantom_plan": [[p, int(n)] for p, n in phantom_plan]}
    key = hashlib.sha256(json.dumps({"parent": parent_info["sha256"], "cases": prints, "hyper": hyper,
                                     "code": code_version()}, sort_keys=True).encode()).hexdigest()[:16]
    state_dir = Path(cache_dir) / "finetune" / key
    state_dir.mkdir(parents=True, exist_ok=True)

    # -- training -----------------------------------------------------------------------------------
    base = TrainConfig(batch=batch, lr=lr, seed=seed, warmup_steps=min(WARMUP_STEPS, max(1, det_steps // 5)),
                       checkpoint_every=50)
    det_cfg = TrainConfig(**{**base.to_dict(), "steps": det_steps})
    seg_cfg = TrainConfig(**{**base.to_dict(), "steps": seg_steps, "seed": seed + 1,
                             "warmup_steps": min(WARMUP_STEPS, max(1, seg_steps // 5))})
    w_review, w_phantom = review_fraction, (1.0 - review_fraction) if phantoms else 0.0
    detector = unpack_model(parent["models"]["detector"])
    det_sampler = MixedSampler([(DetectionSampler(review, det_patch).sample, w_review),
                                (DetectionSampler(phantoms, det_patch).sample if phantoms else None, w_phantom)])
    det_hist = train_model(detector, det_sampler.sample, detection_loss, det_cfg, name="detector", device=device,
                           checkpoint=state_dir / "detector.state", resume=resume, on_step=report.stage("detector"))
    segmenter = unpack_model(parent["models"]["segmenter"])
    seg_review = SegmentationSampler(review, seg_patch, REVIEW_SEG_NEGATIVE)
    seg_phantom = SegmentationSampler(phantoms, seg_patch, P_SEG_NEGATIVE)
    seg_sampler = MixedSampler([(seg_review.sample if len(seg_review) else None, w_review),
                                (seg_phantom.sample if len(seg_phantom) else None, w_phantom)])
    seg_hist = train_model(segmenter, seg_sampler.sample, lambda o, y: dice_bce_loss(o, y), seg_cfg, name="segmenter",
                           device=device, checkpoint=state_dir / "segmenter.state", resume=resume,
                           on_step=report.stage("segmenter"))

    # -- model file ---------------------------------------------------------------------------------
    training = {
        "kind": "finetune",
        "parent": parent_info,
        "data": {
            "cases": len(review) + len(phantoms), "lesions": n_review_lesions + n_phantom_lesions,
            "review": {"case_ids": ids, "cases": len(review), "lesions": n_review_lesions,
                       "lesions_with_mask": n_masks,
                       "hard_negatives": sum(len(c["hard_negative_zyx"]) for c in review),
                       "hard_negatives_dropped": sum(int(c["n_hard_negatives_dropped"]) for c in review),
                       "label_fingerprints": dict(zip(ids, prints))},
            "phantoms": {"generator": "ml.phantom", "presets": counts, "seed_ranges": ranges,
                         "cases": len(phantoms), "lesions": n_phantom_lesions},
            "review_fraction": review_fraction},
        "hyperparameters": hyper,
        "detector": {"train_config": det_cfg.to_dict(), "patch": det_patch, "history": det_hist[-5:],
                     "steps_done": det_hist[-1]["step"] if det_hist else 0},
        "segmenter": {"train_config": seg_cfg.to_dict(), "patch": seg_patch, "history": seg_hist[-5:],
                      "steps_done": seg_hist[-1]["step"] if seg_hist else 0},
        "device": str(device), "torch": str(torch.__version__), "code_version": code_version(),
        "started_at": started.isoformat(timespec="seconds"),
        "wall_time_s": round(time.monotonic() - t0, 1), "data_time_s": round(t_data, 1),
    }
    path = save_model_file(out, {
        "version": f"{out.stem}+{code_version()}", "parent": parent_info,
        "models": {"detector": pack_model(detector), "segmenter": pack_model(segmenter)},
        "preprocessing": dict(parent["preprocessing"]), "inference": dict(parent["inference"]),
        "training": training, "metrics": {}})
    shutil.rmtree(state_dir, ignore_errors=True)
    log.info("wrote %s (%.0f s total)", path, time.monotonic() - t0)
    return path


# -- evaluation -------------------------------------------------------------------------------------


def labelled_case_from_phantom(ph, hard_negatives_xyz_mm=(), case_id: str | None = None) -> LabelledCase:
    """A phantom as a labelled case: every nodule a positive with its exact mask (``label_mask``) and
    analytic centre / diameter; ``case_id`` defaults to ``phantom-<preset>-<seed>``."""
    objects = ndimage.find_objects(ph.label_mask)
    lesions = []
    for les in ph.lesions:
        box = objects[les.id - 1] if les.id - 1 < len(objects) else None
        mask = None if box is None else ph.label_mask[box] == les.id
        lesions.append(LabelledLesion(tuple(float(v) for v in les.centre_xyz_mm), float(les.diameter_mm), mask,
                                      None if box is None else tuple(int(s.start) for s in box)))
    return LabelledCase(case_id or f"phantom-{ph.config.name}-{ph.seed}", Volume.from_phantom(ph), lesions,
                        [tuple(float(v) for v in p) for p in hard_negatives_xyz_mm])


def score_case(case: LabelledCase, findings: list) -> tuple[DetectionCase, list[dict], int]:
    """Match findings with a case's positives (LUNA16: a hit lies within the lesion's radius; a lesion
    counts once, with its best-scored hit). Returns the detection record, one row per lesion (with
    Dice / HD95 / volume error where the lesion has a mask, diameter error where it is hit) and the
    number of false positives (findings hitting no lesion; rejected findings are nothing special)."""
    centres = np.array([f.centre_xyz_mm for f in findings], float).reshape(-1, 3)
    les_c = np.array([les.centre_xyz_mm for les in case.lesions], float).reshape(-1, 3)
    les_d = np.array([les.diameter_mm for les in case.lesions], float)
    record = DetectionCase(centres, np.array([f.score for f in findings], float), les_c, les_d)
    dist = np.linalg.norm(centres[:, None] - les_c[None], axis=-1)                     # (findings, lesions)
    inside = dist <= les_d[None] / 2
    rows = []
    for k, les in enumerate(case.lesions):
        hits = np.flatnonzero(inside[:, k])
        row = {"diameter_mm": float(les.diameter_mm), "detected": bool(hits.size), "has_mask": les.mask is not None}
        if hits.size:
            f = findings[max(hits, key=lambda i: findings[i].score)]
            row.update(score=float(f.score), diameter_error_mm=abs(float(f.diameter_mm) - float(les.diameter_mm)))
            if les.mask is not None:
                idx = np.argwhere(les.mask) + np.asarray(les.mask_origin_zyx)
                dsc, hd = _box_metrics(f, idx, case.volume.spacing_zyx_mm)
                row.update(dice=float(dsc), hd95_mm=float(hd),
                           volume_error_ml=abs(float(f.volume_ml) - len(idx) * case.volume.voxel_volume_ml))
        rows.append(row)
    return record, rows, int((~inside.any(axis=1)).sum()) if len(findings) else 0


def _mean(values) -> float | None:
    values = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else None


def _curve(fr) -> dict:
    return {"fp_per_scan": [float(v) for v in fr.fp_per_scan], "sensitivity": [float(v) for v in fr.sensitivity]}


def summarise_cases(records: list[DetectionCase], rows: list[dict], per_case: list[dict]) -> dict:
    """The contract's metrics dict from per-case records (see :func:`evaluate_cases`)."""
    lo, hi = TARGET_RANGE_MM
    f_all, f_target = froc(records), froc(records, lambda d: lo <= d <= hi)
    seg = [r for r in rows if r["detected"] and r["diameter_mm"] >= SEG_MIN_DIAMETER_MM]
    masked = [r for r in seg if r["has_mask"]]
    n_cases = len(records)
    return {
        "cpm": f_all.cpm() if f_all.n_lesions else None,
        "cpm_4_30": f_target.cpm() if f_target.n_lesions else None,
        "froc": _curve(f_all),
        "dice_ge_6mm": _mean([r["dice"] for r in masked]),
        "hd95_mm": _mean([r["hd95_mm"] for r in masked]),
        "diameter_mae_mm": _mean([r["diameter_error_mm"] for r in seg]),
        "volume_abs_err_ml": _mean([r["volume_error_ml"] for r in masked]),
        "n_cases": n_cases, "n_lesions": len(rows),
        "n_lesions_4_30": f_target.n_lesions, "n_detected": sum(r["detected"] for r in rows),
        "n_segmentation_scored": len(masked),
        "sensitivity_4_30": {f"{r:g}": f_target.sensitivity_at(r) for r in CPM_FP_RATES},
        "froc_4_30": _curve(f_target),
        "false_positives_per_scan": (sum(c["false_positives"] for c in per_case) / n_cases) if n_cases else None,
        "seconds_per_scan": _mean([c["seconds"] for c in per_case]),
        "per_case": per_case,
    }


def _evaluate(predictor: Predictor, cases: Iterable[LabelledCase], total: int | None, tta: bool,
              progress: Callable[[dict], None] | None) -> dict:
    records, rows, per_case = [], [], []
    for i, case in enumerate(cases):
        t = time.perf_counter()
        pred = predictor.predict(case.volume, tta=tta)
        seconds = time.perf_counter() - t
        record, case_rows, fps = score_case(case, pred.findings)
        records.append(record), rows.extend(case_rows)
        per_case.append({"case_id": case.case_id, "lesions": len(case_rows),
                         "detected": sum(r["detected"] for r in case_rows), "findings": len(pred.findings),
                         "false_positives": fps, "seconds": round(seconds, 2)})
        log.info("evaluate %s: %d/%d lesions hit, %d false positives, %.1f s", case.case_id,
                 per_case[-1]["detected"], len(case_rows), fps, seconds)
        if progress is not None:
            progress({"stage": "evaluate", "step": i + 1, "steps": total, "case_id": case.case_id})
    if not records:
        raise ValueError("no cases to evaluate")
    out = summarise_cases(records, rows, per_case)
    out["model_version"] = predictor.version
    return out


def evaluate_cases(model: Path, cases: Iterable[LabelledCase], *, device=None, tta: bool = False,
                   progress: Callable[[dict], None] | None = None) -> dict:
    """The field's metrics of ``model`` on labelled cases.

    ``{"cpm", "cpm_4_30", "froc": {"fp_per_scan": [...], "sensitivity": [...]}, "dice_ge_6mm", "hd95_mm",
    "diameter_mae_mm", "volume_abs_err_ml", "n_cases", "n_lesions", ...}``. Detection (FROC over all
    positives; ``cpm_4_30`` on 4-30 mm ones) uses the LUNA16 hit rule of :mod:`ml.metrics`; a finding
    scores with the combined score the viewer shows. Dice, HD95 (mm) and |volume error| (mL) are means
    over hit lesions >= 6 mm *with a mask*; the diameter MAE (mm) over hit lesions >= 6 mm. A value is
    None where nothing could be measured (e.g. CPM without positives). ``cases`` may be any iterable.
    """
    predictor = Predictor.from_checkpoint(model, device=device)
    total = len(cases) if hasattr(cases, "__len__") else None
    return _evaluate(predictor, cases, total, tta, progress)


def _phantom_cases(n: int, seed: int, preset: str) -> Iterator[LabelledCase]:
    for i in range(n):                      # one phantom in memory at a time
        yield labelled_case_from_phantom(generate_phantom(PhantomConfig.preset(preset), seed=seed + i))


def phantom_benchmark(model: Path, *, n: int = 8, seed: int = BENCHMARK_SEED_BASE, device=None, preset: str = "full",
                      tta: bool = False, progress: Callable[[dict], None] | None = None) -> dict:
    """:func:`evaluate_cases` on the fixed benchmark phantoms ``seed .. seed + n - 1`` (by default
    :data:`BENCHMARK_SEED_BASE`), exact masks as labels: the same dict, plus ``preset`` / ``test_seeds``."""
    predictor = Predictor.from_checkpoint(model, device=device)
    out = _evaluate(predictor, _phantom_cases(n, seed, preset), n, tta, progress)
    out.update(preset=preset, test_seeds=[seed, seed + n - 1])
    return out
