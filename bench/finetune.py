"""Retraining benchmark (issue 7): fine-tune the shipped model on 10 "signed-off" cases and time it.

    .venv/bin/python bench/finetune.py [--cases 10] [--held-out 4] [--threads 2] [--cache DIR]

The radiologist is played by the phantom ground truth: each review case is a full-size phantom
(seeds 50000+, disjoint from training 10000+/20000+ and test 90000+) whose nodules, with their exact
masks, are the accepted findings, and whose baseline false positives scoring >= ``--fp-score`` are the
rejected findings (hard negatives). Then ``ml.finetune.finetune`` runs from ``ml/weights/baseline-v1.pt``
with its defaults (cold phantom cache unless ``--cache`` names a warm one) -- that wall time is the
figure the issue sets (< 10 min on 2 CPU cores). Finally parent and child are scored with
``phantom_benchmark`` on ``--held-out`` test phantoms (seeds 90000+), and on the review cases themselves
(a fit check: do the rejected findings go away?). Figures are printed and written to OUT/result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ml import finetune as ft  # noqa: E402
from ml.evaluate import TEST_SEED_BASE  # noqa: E402
from ml.inference import Predictor  # noqa: E402
from ml.phantom import PhantomConfig, generate_phantom  # noqa: E402
from ml.volumes import Volume  # noqa: E402

REVIEW_SEED = 50_000
KEYS = ("cpm", "cpm_4_30", "dice_ge_6mm", "hd95_mm", "diameter_mae_mm", "volume_abs_err_ml",
        "false_positives_per_scan", "n_lesions", "n_detected")


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def review_cases(parent: Path, n: int, preset: str, fp_score: float):
    """Phantoms labelled by their truth + the parent's confident false positives as rejected findings.
    Also returns the parent's scores on them (from the same predictions)."""
    predictor = Predictor.from_checkpoint(parent)
    cases, records, rows, per_case = [], [], [], []
    for i in range(n):
        ph = generate_phantom(PhantomConfig.preset(preset), seed=REVIEW_SEED + i)
        pred = predictor.predict(Volume.from_phantom(ph))
        truth = [(np.asarray(les.centre_xyz_mm), les.radius_mm) for les in ph.lesions]
        rejected = [f.centre_xyz_mm for f in pred.findings if f.score >= fp_score
                    and all(np.linalg.norm(np.asarray(f.centre_xyz_mm) - c) > r for c, r in truth)]
        case = ft.labelled_case_from_phantom(ph, rejected, case_id=f"review-{preset}-{REVIEW_SEED + i}")
        record, case_rows, fps = ft.score_case(case, pred.findings)
        records.append(record), rows.extend(case_rows)
        per_case.append({"false_positives": fps, "seconds": pred.timings["total"]})
        cases.append(case)
        print(f"  {case.case_id}: {len(ph.lesions)} nodules, {len(pred.findings)} findings, "
              f"{len(rejected)} rejected (score >= {fp_score})", flush=True)
    return cases, ft.summarise_cases(records, rows, per_case)


def row(name: str, m: dict) -> str:
    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"
    return f"{name:<22} " + " ".join(f(m.get(k)) if not k.startswith("n_") else f"{m[k]:6d}" for k in KEYS)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parent", type=Path, default=ROOT / "ml" / "weights" / "baseline-v1.pt")
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--preset", default="full")
    p.add_argument("--fp-score", type=float, default=0.3)
    p.add_argument("--held-out", type=int, default=4)
    p.add_argument("--cache", type=Path, default=None, help="phantom cache (default: a fresh one, i.e. cold)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--det-steps", type=int, default=ft.DET_STEPS)
    p.add_argument("--seg-steps", type=int, default=ft.SEG_STEPS)
    p.add_argument("--no-train-check", action="store_true", help="skip re-scoring the review cases with the child")
    p.add_argument("--no-parent-eval", action="store_true", help="skip the parent's held-out run (deterministic: "
                   "same figures as an earlier run with the same --held-out)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "finetune")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"threads": args.threads, "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "settings": {"det_steps": args.det_steps, "seg_steps": args.seg_steps, "lr": ft.LR,
                           "phantom_plan": ft.PHANTOM_PLAN, "review_fraction": ft.REVIEW_FRACTION}}

    print(f"[setup] {args.cases} review cases ({args.preset} phantoms) labelled by truth + baseline FPs; load {load()}")
    t = time.monotonic()
    cases, parent_on_reviews = review_cases(args.parent, args.cases, args.preset, args.fp_score)
    result["setup_s"] = round(time.monotonic() - t, 1)
    result["review"] = {"cases": len(cases), "lesions": sum(len(c.lesions) for c in cases),
                        "hard_negatives": sum(len(c.hard_negatives_xyz_mm) for c in cases)}
    print(f"[setup] {result['review']} in {result['setup_s']} s")

    cache = args.cache or Path(tempfile.mkdtemp(prefix="radloop-ft-cache-"))
    child = args.out / "child.pt"
    last = [0.0]

    def progress(info):
        if time.monotonic() - last[0] >= 30 or info["step"] == info["steps"]:
            last[0] = time.monotonic()
            loss = "" if info["loss"] is None else f" loss {info['loss']:.4f}"
            eta = "" if info["eta_s"] is None else f" eta {info['eta_s']:.0f} s"
            print(f"  [{info['elapsed_s']:6.0f} s] {info['stage']} {info['step']}/{info['steps']}{loss}{eta}"
                  f"  (load {load()})", flush=True)

    print(f"[finetune] defaults {result['settings']}, cache {cache} ({'warm' if args.cache else 'cold'}); load {load()}")
    load_before = os.getloadavg()
    t = time.monotonic()
    ft.finetune(args.parent, cases, child, cache_dir=cache, progress=progress, det_steps=args.det_steps,
                seg_steps=args.seg_steps)
    wall = time.monotonic() - t
    meta = ft.load_model_file(child)["training"]
    result["finetune"] = {"wall_s": round(wall, 1), "data_s": meta["data_time_s"], "cache": "warm" if args.cache else "cold",
                          "load_before": [round(v, 2) for v in load_before],
                          "load_after": [round(v, 2) for v in os.getloadavg()],
                          "detector_last": meta["detector"]["history"][-1:], "segmenter_last": meta["segmenter"]["history"][-1:]}
    print(f"[finetune] wall {wall:.0f} s ({wall / 60:.1f} min), data {meta['data_time_s']} s; load {load()}")

    print(f"[evaluate] {args.held_out} held-out {args.preset} phantoms (seeds {TEST_SEED_BASE}+), parent then child")
    t = time.monotonic()
    held_parent = {} if args.no_parent_eval else ft.phantom_benchmark(args.parent, n=args.held_out,
                                                                      seed=TEST_SEED_BASE, preset=args.preset)
    held_child = ft.phantom_benchmark(child, n=args.held_out, seed=TEST_SEED_BASE, preset=args.preset)
    result["held_out_eval_s"] = round(time.monotonic() - t, 1)
    result["held_out"] = {"parent": held_parent, "child": held_child}
    if not args.no_train_check:
        result["reviews"] = {"parent": parent_on_reviews, "child": ft.evaluate_cases(child, cases)}
    print(f"{'':<22} " + " ".join(f"{k[:6]:>6}" for k in KEYS))
    if held_parent:
        print(row("held-out parent", held_parent))
    print(row("held-out child", held_child))
    if "reviews" in result:
        print(row("reviews parent (fit)", result["reviews"]["parent"]))
        print(row("reviews child (fit)", result["reviews"]["child"]))
    print(f"held-out evaluation of both models: {result['held_out_eval_s']} s")
    for part in result.get("held_out", {}).values():
        part.pop("per_case", None)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
