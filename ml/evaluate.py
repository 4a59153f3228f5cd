"""Evaluate a model file on fresh phantoms: FROC/CPM, per-size sensitivity, Dice, HD95, volume/diameter errors.

    python -m ml.evaluate MODEL [--phantoms 20] [--seed 90000] [--preset full] [--tta]
                                [--out var/eval] [--write-metrics]

Test phantoms use seeds ``seed .. seed + N - 1`` (default from ``TEST_SEED_BASE`` = 90000), disjoint
from the training ranges (small 10000-19999, full 20000-29999, see ``ml.training.data``). The full
preset draws pixel spacing (0.5-0.98 mm), slice thickness (0.625-5 mm, LIDC mix) and noise (15-40 HU)
per scan. Also runs the threshold+blob sanity baseline. Writes ``OUT/froc.png`` and ``OUT/metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .baseline_threshold import threshold_detect
from .checkpoint import load_model_file, save_model_file
from .inference import Predictor
from .metrics import SIZE_BUCKETS_MM, DetectionCase, dice, froc, hd95, in_bucket
from .phantom import PhantomConfig, generate_phantom
from .plot import draw_froc
from .volumes import Volume

log = logging.getLogger("ml.evaluate")

TEST_SEED_BASE = 90_000
TARGET_RANGE_MM = (4.0, 30.0)


def _box_metrics(finding, lesion_mask_idx: np.ndarray, spacing) -> tuple[float, float]:
    """Dice and HD95 of a finding mask vs a lesion (voxel indices (K, 3)) on their common sub-box."""
    f_idx = np.argwhere(finding.mask) + np.asarray(finding.mask_origin_zyx)
    both = np.concatenate([f_idx, lesion_mask_idx])
    lo = both.min(0)
    shape = both.max(0) - lo + 1
    a, b = np.zeros(shape, bool), np.zeros(shape, bool)
    a[tuple((f_idx - lo).T)] = True
    b[tuple((lesion_mask_idx - lo).T)] = True
    return dice(a, b), hd95(a, b, spacing)


def evaluate_case(ph, pred, score: str = "score") -> tuple[DetectionCase, list[dict]]:
    """Detection record (ranked by the Finding attribute ``score``) and per-lesion rows for one phantom."""
    findings = pred.findings
    centres = np.array([f.centre_xyz_mm for f in findings]).reshape(-1, 3)
    case = DetectionCase(centres, np.array([getattr(f, score) for f in findings]),
                         np.array([les.centre_xyz_mm for les in ph.lesions]).reshape(-1, 3),
                         np.array([les.diameter_mm for les in ph.lesions]))
    rows = []
    for les in ph.lesions:
        d = np.linalg.norm(centres - np.asarray(les.centre_xyz_mm), axis=1) if len(findings) else np.zeros(0)
        hits = [i for i in np.flatnonzero(d <= les.radius_mm)]
        row = {"seed": ph.seed, "id": les.id, "diameter_mm": les.diameter_mm, "texture": les.texture, "detected": bool(hits)}
        if hits:
            f = findings[max(hits, key=lambda i: findings[i].score)]
            idx = np.argwhere(ph.label_mask == les.id)
            dsc, hd = _box_metrics(f, idx, ph.spacing_zyx_mm) if len(idx) else (0.0, float("inf"))
            row.update(score=f.score, dice=dsc, hd95_mm=hd, volume_error_ml=abs(f.volume_ml - les.volume_ml),
                       diameter_error_mm=abs(f.diameter_mm - les.diameter_mm), pred_diameter_mm=f.diameter_mm)
        rows.append(row)
    return case, rows


def _baseline_case(ph) -> DetectionCase:
    centres, scores, _ = threshold_detect(Volume.from_phantom(ph))
    return DetectionCase(centres, scores, np.array([les.centre_xyz_mm for les in ph.lesions]).reshape(-1, 3),
                         np.array([les.diameter_mm for les in ph.lesions]))


def run(model: Path, n: int, seed: int, preset: str, tta: bool) -> dict:
    predictor = Predictor.from_checkpoint(model)
    cases, det_only, baseline, rows, times = [], [], [], [], []
    for i in range(n):
        ph = generate_phantom(PhantomConfig.preset(preset), seed=seed + i)
        t = time.perf_counter()
        pred = predictor.predict(Volume.from_phantom(ph), tta=tta)
        times.append(time.perf_counter() - t)
        case, case_rows = evaluate_case(ph, pred)
        cases.append(case), rows.extend(case_rows), baseline.append(_baseline_case(ph))
        det_only.append(evaluate_case(ph, pred, "detector_score")[0])
        log.info("case %d/%d seed %d: %d lesions, %d findings, %.1f s", i + 1, n, seed + i, len(ph.lesions),
                 len(pred.findings), times[-1])
    summary = summarise(cases, baseline, rows, times, seed, n, preset)
    point = predictor.settings.get("operating_point")
    if point:
        summary["operating_point"] = {**point, **at_threshold(summary["_frocs"]["network"], point["score"])}
    summary["cpm_4_30mm_detector_score_only"] = froc(det_only, lambda d: TARGET_RANGE_MM[0] <= d <= TARGET_RANGE_MM[1]).cpm()
    return summary


def at_threshold(curve, score: float) -> dict:
    """False positives per scan and sensitivity of findings scored ``score`` or more."""
    i = int(np.flatnonzero(curve.thresholds >= score).max())
    return {"test_fp_per_scan": float(curve.fp_per_scan[i]), "test_sensitivity_4_30mm": float(curve.sensitivity[i])}


def _seg_summary(rows: list[dict]) -> dict:
    seg = [r for r in rows if r["detected"]]
    if not seg:
        return {"n": 0}
    hd = np.array([r["hd95_mm"] for r in seg])
    return {"n": len(seg), "dice_mean": float(np.mean([r["dice"] for r in seg])),
            "dice_median": float(np.median([r["dice"] for r in seg])),
            "hd95_mm_mean": float(np.mean(hd[np.isfinite(hd)])) if np.isfinite(hd).any() else None,
            "volume_error_ml_mean": float(np.mean([r["volume_error_ml"] for r in seg])),
            "diameter_mae_mm": float(np.mean([r["diameter_error_mm"] for r in seg]))}


def summarise(cases, baseline, rows, times, seed, n, preset) -> dict:
    lo, hi = TARGET_RANGE_MM
    target = froc(cases, lambda d: lo <= d <= hi)
    out = {"test_seeds": [seed, seed + n - 1], "preset": preset, "scans": n, "lesions": len(rows),
           "cpm_all": froc(cases).cpm(), "cpm_4_30mm": target.cpm(),
           "sensitivity_4_30mm": {str(r): target.sensitivity_at(r) for r in (0.125, 0.25, 0.5, 1, 2, 4, 8)},
           "buckets": {}, "baseline_cpm_4_30mm": froc(baseline, lambda d: lo <= d <= hi).cpm(),
           "seconds_per_scan": float(np.mean(times)) if times else None}
    for blo, bhi in SIZE_BUCKETS_MM:
        fr = froc(cases, in_bucket(blo, bhi))
        out["buckets"][f"{blo:g}-{bhi:g}"] = {"lesions": fr.n_lesions, "cpm": fr.cpm(),
                                              "sens_at_1fp": fr.sensitivity_at(1.0), "sens_at_8fp": fr.sensitivity_at(8.0)}
    out["segmentation_ge_6mm"] = _seg_summary([r for r in rows if r["diameter_mm"] >= 6.0])
    out["segmentation_all"] = _seg_summary(rows)
    out["_frocs"] = {"network": target, "threshold baseline": froc(baseline, lambda d: lo <= d <= hi)}
    return out


def print_table(m: dict) -> None:
    print(f"Test set: {m['scans']} '{m['preset']}' phantoms, seeds {m['test_seeds'][0]}-{m['test_seeds'][1]}, "
          f"{m['lesions']} lesions; {m['seconds_per_scan']:.1f} s/scan")
    print(f"CPM (4-30 mm): {m['cpm_4_30mm']:.3f}   CPM (all): {m['cpm_all']:.3f}   "
          f"threshold baseline CPM (4-30 mm): {m['baseline_cpm_4_30mm']:.3f}   "
          f"(detector score alone: {m['cpm_4_30mm_detector_score_only']:.3f})")
    print("FP/scan    " + " ".join(f"{float(k):>6g}" for k in m["sensitivity_4_30mm"]))
    print("sens 4-30  " + " ".join(f"{v:6.3f}" for v in m["sensitivity_4_30mm"].values()))
    if "operating_point" in m:
        op = m["operating_point"]
        print(f"operating point (score >= {op['score']:.3f}, set for {op['fp_per_scan']:g} FP/scan on calibration): "
              f"{op['test_fp_per_scan']:.2f} FP/scan, sensitivity 4-30 mm {op['test_sensitivity_4_30mm']:.3f}")
    print(f"{'bucket mm':<10} {'lesions':>7} {'CPM':>6} {'s@1FP':>6} {'s@8FP':>6}")
    for name, b in m["buckets"].items():
        print(f"{name:<10} {b['lesions']:>7} {b['cpm']:6.3f} {b['sens_at_1fp']:6.3f} {b['sens_at_8fp']:6.3f}")
    for key in ("segmentation_ge_6mm", "segmentation_all"):
        s = m[key]
        if s["n"]:
            print(f"{key}: n={s['n']} Dice mean {s['dice_mean']:.3f} (median {s['dice_median']:.3f}), "
                  f"HD95 {s['hd95_mm_mean']:.2f} mm, |dV| {s['volume_error_ml_mean']:.4f} mL, "
                  f"diameter MAE {s['diameter_mae_mm']:.2f} mm")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--phantoms", type=int, default=20)
    p.add_argument("--seed", type=int, default=TEST_SEED_BASE)
    p.add_argument("--preset", default="full")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--out", type=Path, default=Path("var/eval"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write-metrics", action="store_true", help="store the summary in the model file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    m = run(args.model, args.phantoms, args.seed, args.preset, args.tta)
    frocs = m.pop("_frocs")
    png = draw_froc(frocs, args.out / "froc.png", title=f"FROC 4-30 mm, {m['scans']} {m['preset']} phantoms")
    (args.out / "metrics.json").write_text(json.dumps(m, indent=2))
    print_table(m)
    print(f"FROC plot: {png}")
    if args.write_metrics:
        payload = load_model_file(args.model)
        payload["metrics"] = m
        save_model_file(args.model, payload)


if __name__ == "__main__":
    main()
