"""Fit the second-stage false-positive reduction of a model file on calibration phantoms.

    python -m ml.fpr MODEL [--phantoms 64] [--seed 30000] [--cache var/fpr] [--det-tta 4] [--write]

Runs the model on full-preset phantoms ``seed .. seed + N - 1`` (calibration range 30000-39999:
never trained on, never used for evaluation), records every candidate's features
(:mod:`ml.inference.rescoring`) and whether it hits a nodule (LUNA16 rule), chooses the L2 strength
by phantom-grouped cross-validation on the CPM (4-30 mm), fits the logistic rescorer on all of them
and, with ``--write``, stores it in the model file's inference settings together with the operating
point: the score at which the out-of-fold candidates make ``--operating-fp`` false positives per scan
(findings below it are flagged as candidates; the app shows them on request). The test seeds of
``ml.evaluate`` are never looked at. Candidates are cached per phantom in ``--cache``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_model_file, save_model_file
from .evaluate import TARGET_RANGE_MM
from .inference import Predictor
from .inference.rescoring import FEATURES, Rescorer, fit
from .metrics import DetectionCase, froc
from .phantom import PhantomConfig, generate_phantom
from .volumes import Volume

log = logging.getLogger("ml.fpr")

CALIBRATION_SEED_BASE = 30_000
L2_GRID = (0.1, 1.0, 10.0, 100.0)


def collect(predictor: Predictor, n: int, seed: int, cache: Path | None, preset: str = "full") -> list[dict]:
    """Per phantom: candidate centres (mm), features, detector-stage scores, lesion centres and diameters."""
    s = predictor.settings
    tag = f"{predictor.version}-{s['max_candidates']}-{s['score_threshold']:g}-{preset}"
    if s.get("det_tta", 1) > 1:
        tag += f"-dettta{s['det_tta']}"
    cases = []
    for i in range(n):
        path = cache / f"{tag}-{seed + i}.npz" if cache else None
        if path and path.exists():
            cached = dict(np.load(path))
            if list(cached.pop("feature_names")) == list(FEATURES):
                cases.append(cached)
                continue
        t = time.perf_counter()
        ph = generate_phantom(PhantomConfig.preset(preset), seed=seed + i)
        pred = predictor.predict(Volume.from_phantom(ph))
        f = pred.findings
        case = {"centres": np.array([x.centre_xyz_mm for x in f]).reshape(-1, 3),
                "features": np.array([x.features for x in f]).reshape(-1, len(FEATURES)),
                "stage1": np.array([x.score for x in f]),
                "lesion_centres": np.array([les.centre_xyz_mm for les in ph.lesions]).reshape(-1, 3),
                "lesion_diameters": np.array([les.diameter_mm for les in ph.lesions])}
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, feature_names=np.array(FEATURES), **case)
        cases.append(case)
        log.info("phantom %d/%d (seed %d): %d lesions, %d candidates, %.1f s", i + 1, n, seed + i,
                 len(ph.lesions), len(f), time.perf_counter() - t)
    return cases


def labels(case: dict) -> np.ndarray:
    """1 where a candidate's centre lies within a nodule's radius (any size), else 0."""
    c, les = case["centres"], case["lesion_centres"]
    if len(c) == 0 or len(les) == 0:
        return np.zeros(len(c))
    d = np.linalg.norm(c[:, None] - les[None], axis=-1)
    return (d <= case["lesion_diameters"][None] / 2).any(1).astype(float)


def target_froc(cases: list[dict], scores: list[np.ndarray]):
    """FROC of the 4-30 mm nodules with each phantom's candidates ranked by ``scores``."""
    lo, hi = TARGET_RANGE_MM
    det = [DetectionCase(c["centres"], s, c["lesion_centres"], c["lesion_diameters"]) for c, s in zip(cases, scores)]
    return froc(det, lambda d: lo <= d <= hi)


def cpm(cases: list[dict], scores: list[np.ndarray]) -> float:
    return target_froc(cases, scores).cpm()


def cross_validate(cases: list[dict], l2: float, folds: int = 4) -> float:
    """CPM of out-of-fold rescored candidates (folds by phantom)."""
    return cpm(cases, out_of_fold(cases, l2, folds))


def out_of_fold(cases: list[dict], l2: float, folds: int = 4) -> list[np.ndarray]:
    """Each phantom's candidates scored by a rescorer fitted without it (folds by phantom)."""
    scores: list[np.ndarray] = [np.zeros(0)] * len(cases)
    for k in range(folds):
        train = [c for i, c in enumerate(cases) if i % folds != k]
        model = _fit(train, l2)
        for i, c in enumerate(cases):
            if i % folds == k:
                scores[i] = model(c["features"]) if len(c["features"]) else np.zeros(0)
    return scores


def operating_point(cases: list[dict], scores: list[np.ndarray], fp_per_scan: float) -> dict:
    """The lowest score threshold whose false positives per scan stay within ``fp_per_scan`` (with
    the sensitivity for 4-30 mm nodules it reaches there). 1.0 (nothing flagged) when even the best
    candidate is over the budget."""
    curve = target_froc(cases, scores)
    ok = np.flatnonzero(curve.fp_per_scan <= fp_per_scan + 1e-12)
    best = ok[-1] if len(ok) else 0      # thresholds descend: the last one within the budget is the lowest
    return {"fp_per_scan": fp_per_scan, "score": float(curve.thresholds[best]) if best > 0 else 1.0,
            "calibration_fp_per_scan": float(curve.fp_per_scan[best]),
            "calibration_sensitivity_4_30mm": float(curve.sensitivity[best])}


def _fit(cases: list[dict], l2: float) -> Rescorer:
    x = np.concatenate([c["features"] for c in cases])
    y = np.concatenate([labels(c) for c in cases])
    return fit(x, y, l2=l2)


def calibrate(model: Path, n: int, seed: int, cache: Path | None, candidates: dict,
              operating_fp: float = 1.0) -> tuple[Rescorer, dict]:
    """Fit a rescorer for ``model`` with the candidate settings ``candidates`` (``max_candidates``,
    ``score_threshold``); returns it with a report."""
    payload = load_model_file(model)
    settings = {k: v for k, v in payload["inference"].items() if k != "rescoring"}
    # every candidate is kept while collecting: the rescorer is fitted on all of them
    payload["inference"] = {**settings, **candidates, "max_findings": candidates["max_candidates"]}
    predictor = Predictor(payload)                  # candidates and stage-1 scores without a rescorer
    cases = collect(predictor, n, seed, cache)
    before = cpm(cases, [c["stage1"] for c in cases])
    cv = {l2: cross_validate(cases, l2) for l2 in L2_GRID}
    best = max(cv, key=lambda l2: (cv[l2], l2))
    rescorer = _fit(cases, best)
    point = operating_point(cases, out_of_fold(cases, best), operating_fp)
    y = np.concatenate([labels(c) for c in cases])
    report = {"calibration_seeds": [seed, seed + n - 1], "phantoms": n, **candidates, "candidates": int(len(y)),
              "positives": int(y.sum()), "l2": best, "cv_cpm_4_30mm_by_l2": {str(k): v for k, v in cv.items()},
              "cpm_4_30mm_stage1": before, "cpm_4_30mm_rescored_cv": cv[best], "operating_point": point,
              "weights": dict(zip(FEATURES, rescorer.weights))}
    return rescorer, report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ml.fpr", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--phantoms", type=int, default=64)
    p.add_argument("--seed", type=int, default=CALIBRATION_SEED_BASE)
    p.add_argument("--cache", type=Path, default=Path("var/fpr"))
    p.add_argument("--max-candidates", type=int, default=60, help="candidates segmented and rescored per scan")
    p.add_argument("--score-threshold", type=float, default=0.03, help="lowest detector heat-map peak kept")
    p.add_argument("--operating-fp", type=float, default=1.0,
                   help="false positives per scan at the operating point: findings scored below it are "
                        "candidates, shown on request (default 1)")
    p.add_argument("--det-tta", type=int, default=None,
                   help="detector heat map averaged over this many flips (1-8; default: the model's setting)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="store the rescorer in the model file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    candidates = {"max_candidates": args.max_candidates, "score_threshold": args.score_threshold}
    if args.det_tta is not None:
        candidates["det_tta"] = args.det_tta
    rescorer, report = calibrate(args.model, args.phantoms, args.seed, args.cache, candidates, args.operating_fp)
    print(json.dumps(report, indent=2))
    if args.write:
        payload = load_model_file(args.model)
        payload["inference"] = {**payload["inference"], **candidates, "rescoring": rescorer.to_dict(),
                                "operating_point": report["operating_point"]}
        payload.setdefault("training", {})["rescoring"] = report
        save_model_file(args.model, payload)
        print(f"rescorer written to {args.model}")


if __name__ == "__main__":
    main()
