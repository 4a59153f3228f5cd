#!/usr/bin/env python3
"""Does the loop learn, and does RadLoop's reading order make it learn faster? A simulation through
the real services, with the phantom generator as the radiologist.

    nice .venv/bin/python bench/active_learning.py                   # the small configuration (~20 min, 2 cores)
    nice .venv/bin/python bench/active_learning.py --pool 40 --k 10 --seeds 0 1 2 \\
        --det-steps 200 --seg-steps 150 --heldout 16 --max-reviews 40   # the full one (see --help)

Set-up (once, cached under ``bench/out/``): a deliberately weak baseline (``python -m ml.train`` on a
few easy phantoms, few steps); a pool of phantom studies, half of them "hard" (ground-glass and
part-solid, small, touching vessels) and a fixed held-out phantom set of the same mix.

Then for each order (``al``: RadLoop's active-learning order = ``webapp.review.worklist.next_case``;
``random``; ``fg``: random among the cases where the champion found something) and each seed, on a
throw-away SQLite database (emptied between simulations):

1. the pool is ingested (``webapp.archive.services``) and read by the baseline in-process
   (``webapp.modelops.services.run_inference``, with TTA as configured: findings get uncertainties);
2. a simulated radiologist takes the next case in that order and corrects it through
   ``webapp.review.services`` with the phantom's ground truth: accepts AI findings that hit a lesion
   (the LUNA16 rule: centre within the lesion's radius; the best-scored one per lesion) and repaints
   their masks with the true ones, rejects the others, adds the missed lesions with their masks, signs off;
3. after every K sign-offs the sign-off trigger (``request_retraining("signoffs")``) queues a run and
   ``run_training`` (what the ``train`` worker calls) fine-tunes, evaluates and applies the promotion
   rule; after a promotion the unreviewed studies are read again with the new champion
   (``rerun_unreviewed`` + ``run_inference``);
4. the champion of each moment is scored on the held-out phantoms (``ml.finetune.evaluate_cases``:
   CPM and Dice >= 6 mm, no TTA).

Prints the curves (mean over seeds), how many reviewed cases each order needs to reach the CPM the
random order ends with, and whether any promotion made the held-out CPM or Dice worse; writes a PNG
and the raw numbers (JSON) to ``--out``. Inference of the same series by the same model file (same
SHA-256) is computed once per process and reused across simulations (the predictor is deterministic).
Asserts nothing.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
CACHE = OUT / "al-cache"          # training phantoms (baseline and rehearsal during fine-tuning)
DATA = OUT / "al-data"            # DICOM folders of the pool
POOL_SEED, HELDOUT_SEED = 70_000, 71_000
ORDERS = {"al": "active learning (RadLoop)", "random": "random", "fg": "foreground-aware random"}
log = logging.getLogger("bench.active_learning")


# --- configuration ----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=int, default=12, help="phantom studies in the pool (default 12)")
    p.add_argument("--k", type=int, default=4, help="retrain after every K signed-off cases (default 4)")
    p.add_argument("--max-reviews", type=int, default=None, help="stop after this many reviewed cases (default: pool)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="simulation seeds (default 0 1)")
    p.add_argument("--orders", nargs="+", default=list(ORDERS), choices=list(ORDERS))
    p.add_argument("--preset", default="small", help="phantom preset of pool and held-out set (default small)")
    p.add_argument("--hard-share", type=float, default=0.5, help="share of hard phantoms in pool and held-out set")
    p.add_argument("--heldout", type=int, default=6, help="held-out phantoms (default 6)")
    p.add_argument("--det-steps", type=int, default=30, help="fine-tuning steps of the detector per retraining")
    p.add_argument("--seg-steps", type=int, default=20, help="... and of the segmenter")
    p.add_argument("--lr", type=float, default=2e-4, help="fine-tuning learning rate (RETRAIN_LR; default 2e-4)")
    p.add_argument("--rehearsal", type=int, default=4, help="training phantoms mixed into each fine-tune (anti-forgetting)")
    p.add_argument("--benchmark-n", type=int, default=2, help="phantoms of the promotion rule's benchmark")
    p.add_argument("--baseline-phantoms", type=int, default=6, help="small phantoms the weak baseline is trained on")
    p.add_argument("--baseline-det-steps", type=int, default=120)
    p.add_argument("--baseline-seg-steps", type=int, default=80)
    p.add_argument("--max-findings", type=int, default=8,
                   help="findings per scan the models report (written into the baseline's inference settings; "
                        "fine-tuned models inherit it). Segmentation with TTA costs per finding (default 8)")
    p.add_argument("--score-rejected", action="store_true", help="also score rejected challengers on the held-out set")
    p.add_argument("--baseline", type=Path, default=None, help="use this model file as the baseline instead")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-tta", action="store_true", help="inference without TTA (the AL order then has no uncertainty)")
    p.add_argument("--out", type=Path, default=OUT / "active-learning")
    return p.parse_args(argv)


def hard_config(preset: str):
    """The pool's hard cases: faint (ground-glass, part-solid), small, often touching a vessel."""
    from ml.phantom import PhantomConfig

    return PhantomConfig.preset(
        preset, texture_probs=(("ground_glass", 0.45), ("part_solid", 0.3), ("solid", 0.25)),
        attach_probs=((None, 0.3), ("vessel", 0.5), ("pleura", 0.2)), nodule_diameter_mm_range=(3.0, 10.0),
        n_nodules_range=(1, 3), p_no_nodules=0.0)


def phantom(preset: str, seed: int, hard: bool):
    from ml.phantom import PhantomConfig, generate_phantom

    return generate_phantom(hard_config(preset) if hard else PhantomConfig.preset(preset), seed=seed)


def is_hard(i: int, share: float) -> bool:
    """Spread the hard cases evenly: case i is hard when floor((i+1) * share) grew."""
    return int((i + 1) * share) > int(i * share)


def weak_baseline(args) -> Path:
    """A model trained on few phantoms for few steps, cached by its recipe (its own training folder, so
    ml.train never resumes another recipe's state)."""
    recipe = f"s{args.baseline_phantoms}-d{args.baseline_det_steps}-g{args.baseline_seg_steps}"
    path = args.baseline.resolve() if args.baseline is not None else OUT / f"al-baseline-{recipe}.pt"
    if not path.exists():
        print(f"training the weak baseline -> {path.name} ...", flush=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ml.train", "--out", str(path), "--cache", str(OUT / f"al-train-{recipe}"),
                        "--n-small", str(args.baseline_phantoms), "--n-full", "0",
                        "--det-steps", str(args.baseline_det_steps), "--seg-steps", str(args.baseline_seg_steps),
                        "--threads", str(args.threads), "--workers", "1"], cwd=ROOT, check=True)
        print(f"  {time.perf_counter() - t:.0f} s", flush=True)
    return with_max_findings(path, args.max_findings)


def with_max_findings(path: Path, max_findings: int) -> Path:
    """A copy of a model file whose inference settings report at most ``max_findings`` per scan."""
    from ml.checkpoint import load_model_file, save_model_file

    out = OUT / f"{path.stem}-m{max_findings}.pt"
    if not out.exists():
        payload = load_model_file(path)
        payload["inference"] = {**payload["inference"], "max_findings": int(max_findings)}
        save_model_file(out, payload)
    return out


def setup_django(workdir: Path, args, baseline: Path) -> None:
    os.environ.update(
        DATABASE_URL=f"sqlite:///{workdir / 'bench.sqlite3'}", RADLOOP_VAR_DIR=str(workdir / "var"),
        MEDIA_ROOT=str(workdir / "media"), LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="webapp.settings",
        BASELINE_MODEL_PATH=str(baseline), INFERENCE_TTA="0" if args.no_tta else "1",
        RETRAIN_EVERY_N_SIGNED_OFF=str(args.k), RETRAIN_DET_STEPS=str(args.det_steps),
        RETRAIN_SEG_STEPS=str(args.seg_steps), RETRAIN_LR=str(args.lr), RETRAIN_PHANTOMS_SMALL=str(args.rehearsal), RETRAIN_PHANTOMS_FULL="0",
        RETRAIN_BENCHMARK_N=str(args.benchmark_n), RETRAIN_BENCHMARK_PRESET=args.preset, RETRAIN_DEVICE="cpu",
        RETRAIN_CACHE_DIR=str(CACHE), RETRAIN_MODELS_DIR=str(workdir / "models"), RETRAIN_TORCH_THREADS=str(args.threads),
    )
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# --- the pool, the held-out set -------------------------------------------------------------------


class Pool:
    """Phantoms of the pool (ground truth in memory) and their DICOM folders (cached on disk)."""

    def __init__(self, args):
        from ml.phantom import write_dicom_series

        self.phantoms, self.folders, self.hard = {}, {}, {}
        for i in range(args.pool):
            seed, hard = POOL_SEED + i, is_hard(i, args.hard_share)
            ph = phantom(args.preset, seed, hard)
            folder = DATA / f"{args.preset}-{'hard' if hard else 'plain'}-{seed}"
            if not (folder / "done").exists():
                shutil.rmtree(folder, ignore_errors=True)
                write_dicom_series(ph, folder, patient_id=f"AL-{i:03d}", patient_name=f"Pool^{i:03d}")
                (folder / "done").write_text("ok")
            self.phantoms[f"AL-{i:03d}"], self.folders[f"AL-{i:03d}"], self.hard[f"AL-{i:03d}"] = ph, folder, hard
        n_les = sum(len(p.lesions) for p in self.phantoms.values())
        print(f"pool: {args.pool} {args.preset} phantoms ({sum(self.hard.values())} hard), {n_les} lesions", flush=True)


def heldout_cases(args) -> list:
    from ml.finetune import labelled_case_from_phantom

    cases = [labelled_case_from_phantom(phantom(args.preset, HELDOUT_SEED + i, is_hard(i, args.hard_share)),
                                        case_id=f"heldout-{i}") for i in range(args.heldout)]
    print(f"held-out set: {len(cases)} phantoms, {sum(len(c.lesions) for c in cases)} lesions", flush=True)
    return cases


class Scores:
    """Held-out CPM / Dice of a model file, computed once per SHA-256."""

    def __init__(self, cases):
        self.cases, self.cache = cases, {}

    def __call__(self, model) -> dict:
        if model.sha256 not in self.cache:
            from ml.finetune import evaluate_cases

            m = evaluate_cases(model.path, self.cases, device="cpu")
            self.cache[model.sha256] = {"cpm": m["cpm"], "dice": m["dice_ge_6mm"], "detected": m["n_detected"],
                                        "lesions": m["n_lesions"], "fp_per_scan": m["false_positives_per_scan"]}
        return self.cache[model.sha256]


class CachedPredictors:
    """``predictor_for`` for run_inference: one ml Predictor per model file, predictions memoised by
    (model SHA-256, volume bytes, TTA): the same model reads the same series the same way."""

    def __init__(self):
        self.predictors, self.memo = {}, {}
        self.hits = self.misses = 0

    def __call__(self, model_version):
        from ml.inference import Predictor

        key = model_version.sha256
        if key not in self.predictors:
            self.predictors[key] = Predictor.from_checkpoint(model_version.path, device="cpu")
        predictor, memo, outer = self.predictors[key], self.memo, self

        class Memo:
            def predict(self, volume, tta=False, progress=None):
                k = (key, hashlib.sha256(np.ascontiguousarray(volume.hu).tobytes()).hexdigest(), bool(tta))
                if k not in memo:
                    outer.misses += 1
                    memo[k] = predictor.predict(volume, tta=tta, progress=progress)
                else:
                    outer.hits += 1
                return memo[k]

        return Memo()


# --- one simulation -------------------------------------------------------------------------------


def reset_database(workdir: Path) -> None:
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)
    for sub in ("media", "models"):
        shutil.rmtree(workdir / sub, ignore_errors=True)


def read_pending(predictors) -> int:
    """Every queued inference run, in-process (what the gpu worker does)."""
    from webapp.modelops import services as modelops
    from webapp.modelops.models import InferenceRun

    n = 0
    for run_id in InferenceRun.objects.filter(state=InferenceRun.State.QUEUED).order_by("pk").values_list("pk", flat=True):
        result = modelops.run_inference(run_id, predictors)
        if result.state != "done":
            raise RuntimeError(f"inference run {run_id}: {result.state} {result.error}")
        n += 1
    return n


def ingest_pool(pool: Pool) -> dict[str, str]:
    from webapp.archive import services as archive
    from webapp.archive.models import Series
    from webapp.modelops import services as modelops

    batch = archive.start_batch(None, "command")
    for folder in pool.folders.values():
        archive.ingest_path(batch, folder)
    archive.finish_batch(batch)
    uids = {}
    for series in Series.objects.select_related("study"):
        modelops.prepare_and_queue(series.pk)  # what the prepare_series task does
        uids[series.study.study_uid] = series.study.patient_id
    return uids


def mask_payload(mask: np.ndarray, origin) -> dict:
    return {"origin_zyx": [int(v) for v in origin], "shape_zyx": [int(n) for n in mask.shape],
            "bits_b64": base64.b64encode(np.packbits(mask.astype(bool).ravel()).tobytes()).decode()}


def lesion_masks(ph) -> dict[int, tuple[np.ndarray, tuple]]:
    from scipy import ndimage

    out = {}
    for les, box in zip(ph.lesions, ndimage.find_objects(ph.label_mask, max_label=len(ph.lesions))):
        if box is not None:
            out[les.id] = (ph.label_mask[box] == les.id, tuple(s.start for s in box))
    return out


def radiologist_reads(study, ph, user) -> dict:
    """Correct one case with the ground truth through the review services; sign it off."""
    from webapp.review import services as review
    from webapp.review.models import Finding

    from webapp.review.geometry import series_grid

    series = study.series.get()
    grid = series_grid(series)
    if grid is None or tuple(grid.shape_zyx) != tuple(ph.hu.shape):
        raise RuntimeError(f"{study.patient_id}: the series grid differs from the phantom's")
    rev = review.get_case(study).revision
    masks = lesion_masks(ph)
    lesions = list(ph.lesions)
    centres = np.array([l.centre_xyz_mm for l in lesions], float).reshape(-1, 3)
    radii = np.array([l.diameter_mm / 2 for l in lesions], float)
    proposed = list(Finding.objects.filter(study=study, status=Finding.Status.PROPOSED).order_by("-score", "pk"))
    hit_lesions, counts = set(), {"accepted": 0, "rejected": 0, "added": 0}
    for f in proposed:
        d = np.linalg.norm(centres - np.array(f.centre_xyz_mm), axis=1) if len(lesions) else np.zeros(0)
        inside = [k for k in np.flatnonzero(d <= radii) if lesions[k].id not in hit_lesions]
        if inside:
            les = lesions[min(inside, key=lambda k: d[k])]
            hit_lesions.add(les.id)
            rev = review.accept_finding(study, user, base_revision=rev, finding_id=f.pk).revision
            if les.id in masks:
                rev = review.paint_mask(study, user, base_revision=rev, finding_id=f.pk,
                                        mask=mask_payload(*masks[les.id])).revision
            counts["accepted"] += 1
        else:
            reason = "duplicate" if any(np.flatnonzero(d <= radii)) else "not a nodule"
            rev = review.reject_finding(study, user, base_revision=rev, finding_id=f.pk, reason=reason).revision
            counts["rejected"] += 1
    for les in lesions:
        if les.id in hit_lesions:
            continue
        mask = mask_payload(*masks[les.id]) if les.id in masks else None
        rev = review.add_finding(study, user, base_revision=rev, series_uid=series.series_uid,
                                 centre_mm=[float(v) for v in les.centre_xyz_mm], diameter_mm=float(les.diameter_mm),
                                 mask=mask).revision
        counts["added"] += 1
    review.sign_off_case(study, user, base_revision=rev)
    return counts


def pick(order: str, rng: np.random.Generator, user):
    from webapp.archive.models import AIStatus, ReviewStatus, Study
    from webapp.review.models import Finding
    from webapp.review.worklist import next_case

    if order == "al":
        return next_case(user)
    pool = list(Study.objects.filter(review_status=ReviewStatus.UNREVIEWED, ai_status=AIStatus.AI_READY).order_by("pk"))
    if order == "fg":
        found = set(Finding.objects.filter(study__in=pool, source=Finding.Source.AI, status=Finding.Status.PROPOSED)
                    .values_list("study_id", flat=True))
        pool = [s for s in pool if s.pk in found] or pool
    return pool[int(rng.integers(len(pool)))] if pool else None


def simulate(order: str, seed: int, args, workdir: Path, pool: Pool, scores: Scores, predictors) -> dict:
    from django.contrib.auth.models import User

    from webapp.modelops import services as modelops
    from webapp.training import services as training
    from webapp.training.models import TrainingRun

    reset_database(workdir)
    t0 = time.perf_counter()
    user = User.objects.create_user("sim-radiologist")
    ingest_pool(pool)
    read_pending(predictors)
    champion = modelops.get_champion()
    rng = np.random.default_rng([seed, 7])
    curve = [{"reviewed": 0, "version": champion.version, **scores(champion)}]
    events, picked = [], []
    limit = min(args.max_reviews or args.pool, args.pool)
    print(f"\n[{order} seed {seed}] baseline v{champion.version}: held-out CPM {curve[0]['cpm']:.3f}, "
          f"Dice {fmt(curve[0]['dice'])}", flush=True)
    for n in range(1, limit + 1):
        study = pick(order, rng, user)
        if study is None:
            break
        counts = radiologist_reads(study, pool.phantoms[study.patient_id], user)
        picked.append(study.patient_id)
        log.info("%s: %s", study.patient_id, counts)
        run = training.request_retraining(TrainingRun.Trigger.SIGNOFFS)
        if run is None:
            continue
        before = modelops.get_champion()
        t = time.perf_counter()
        result = training.run_training(run.pk)
        run.refresh_from_db()
        after = modelops.get_champion()
        reread = 0
        if after.pk != before.pk:
            modelops.rerun_unreviewed(actor=None)
            reread = read_pending(predictors)
        m_before, m_after = scores(before), scores(after)
        curve.append({"reviewed": n, "version": after.version, **m_after})
        events.append({"reviewed": n, "run": run.pk, "state": result["state"], "decision": run.decision,
                       "reason": run.decision_reason or run.error, "challenger": result.get("challenger"),
                       "promoted": after.pk != before.pk, "before": m_before, "after": m_after,
                       "challenger_heldout": (scores(run.challenger) if run.challenger and (args.score_rejected
                                              or run.challenger_id == after.pk) else None),
                       "train_seconds": round(time.perf_counter() - t, 1), "reread": reread})
        e = events[-1]
        print(f"  after {n:3d} reviewed: run {run.pk} {e['decision'] or e['state']:>9} "
              f"(challenger held-out CPM {fmt(e['challenger_heldout'] and e['challenger_heldout']['cpm'])}); "
              f"champion v{after.version} CPM {m_after['cpm']:.3f} Dice {fmt(m_after['dice'])}; "
              f"{e['train_seconds']:.0f} s training, {reread} re-read", flush=True)
    print(f"  order read: {' '.join(picked)}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"order": order, "seed": seed, "curve": curve, "events": events, "picked": picked,
            "hard_picked": [pool.hard[p] for p in picked], "seconds": round(time.perf_counter() - t0, 1)}


# --- report ---------------------------------------------------------------------------------------


def fmt(v) -> str:
    return "  —  " if v is None else f"{v:.3f}"


def value_at(curve: list[dict], n: int, key: str):
    """The champion's metric after ``n`` reviewed cases (a step function)."""
    v = None
    for point in curve:
        if point["reviewed"] <= n:
            v = point[key]
    return v


def mean_curve(sims: list[dict], checkpoints: list[int], key: str) -> list[float | None]:
    out = []
    for n in checkpoints:
        vals = [value_at(s["curve"], n, key) for s in sims]
        vals = [v for v in vals if v is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def needed(curve: list, checkpoints: list[int], target: float):
    return next((n for n, v in zip(checkpoints, curve) if v is not None and v >= target - 1e-9), None)


def report(results: list[dict], args) -> dict:
    checkpoints = sorted({p["reviewed"] for r in results for p in r["curve"]})
    by_order = {o: [r for r in results if r["order"] == o] for o in args.orders}
    table = {o: {"cpm": mean_curve(s, checkpoints, "cpm"), "dice": mean_curve(s, checkpoints, "dice")}
             for o, s in by_order.items() if s}
    print("\nHeld-out CPM / Dice >= 6 mm of the champion (mean over seeds) against reviewed cases:")
    print("  reviewed " + "".join(f"| {o:>17} " for o in table))
    for i, n in enumerate(checkpoints):
        print(f"  {n:8d} " + "".join(f"| {fmt(t['cpm'][i])} / {fmt(t['dice'][i])} " for t in table.values()))
    summary = {"checkpoints": checkpoints, "mean": table}
    control = "random" if "random" in table else next(iter(table))
    target = table[control]["cpm"][-1]
    print(f"\nReviewed cases needed to reach the CPM the {ORDERS[control]} order ends with ({fmt(target)}):")
    summary["target_cpm"], summary["needed"] = target, {}
    for o, t in table.items():
        n = needed(t["cpm"], checkpoints, target)
        summary["needed"][o] = n
        print(f"  {ORDERS[o]:<26} {n if n is not None else 'not reached'}")
    if summary["needed"].get("al") and summary["needed"].get(control):
        saving = 1 - summary["needed"]["al"] / summary["needed"][control]
        summary["al_saving_vs_control"] = saving
        print(f"  active learning needs {saving:+.0%} fewer reviewed cases than {ORDERS[control]} "
              "(0 % when the baseline already had that CPM)")
    promotions = [e for r in results for e in r["events"] if e["promoted"]]
    worse = [e for e in promotions if e["after"]["cpm"] < e["before"]["cpm"] - 1e-9
             or (e["before"]["dice"] is not None and (e["after"]["dice"] or 0) < e["before"]["dice"] - 1e-9)]
    runs = [e for r in results for e in r["events"]]
    print(f"\nTraining runs: {len(runs)} ({sum(e['state'] == 'done' for e in runs)} done, "
          f"{len(promotions)} promoted, {sum(e['decision'] == 'rejected' for e in runs)} rejected, "
          f"{sum(e['state'] == 'failed' for e in runs)} failed); mean {np.mean([e['train_seconds'] for e in runs]) if runs else 0:.0f} s each")
    print(f"Promotions that made the held-out CPM or Dice worse: {len(worse)} of {len(promotions)}")
    for e in worse:
        print(f"  after {e['reviewed']} reviewed: CPM {fmt(e['before']['cpm'])} -> {fmt(e['after']['cpm'])}, "
              f"Dice {fmt(e['before']['dice'])} -> {fmt(e['after']['dice'])}; rule said: {e['reason']}")
    rejected_better = [e for e in runs if not e["promoted"] and e["challenger_heldout"]
                       and e["challenger_heldout"]["cpm"] > e["before"]["cpm"] + 1e-9]
    unscored = sum(1 for e in runs if not e["promoted"] and e["challenger_heldout"] is None)
    print(f"Rejected challengers that were better on the held-out CPM: {len(rejected_better)}"
          + (f" ({unscored} rejected challenger(s) not scored; --score-rejected scores them)" if unscored else ""))
    for o, sims in by_order.items():
        hard = [np.mean(s["hard_picked"][: args.k]) for s in sims if s["hard_picked"]]
        print(f"  {ORDERS[o]:<26} share of hard cases among the first K={args.k} read: "
              f"{np.mean(hard):.0%}" if hard else "")
    summary.update(promotions=len(promotions), worse_promotions=len(worse), runs=len(runs),
                   rejected_but_better=len(rejected_better))
    return summary


def plot(results: list[dict], summary: dict, path: Path) -> Path:
    """Two panels (CPM, Dice) against reviewed cases: mean per order (thick), each seed (thin)."""
    from PIL import Image, ImageDraw

    colours = {"al": (214, 39, 40), "random": (31, 119, 180), "fg": (44, 160, 44)}
    W, H, M = 1000, 440, 60
    img = Image.new("RGB", (W, H), "white")
    g = ImageDraw.Draw(img)
    xs = summary["checkpoints"]
    xmax = max(xs) or 1
    pw = (W - 3 * M) // 2
    for panel, key in enumerate(("cpm", "dice")):
        vals = [p[key] for r in results for p in r["curve"] if p[key] is not None]
        lo, hi = (min(vals), max(vals)) if vals else (0, 1)
        lo, hi = max(0.0, lo - 0.05), min(1.0, hi + 0.05)
        x0 = M + panel * (pw + M)

        def xy(n, v):
            return x0 + n / xmax * pw, H - M - (v - lo) / max(hi - lo, 1e-6) * (H - 2 * M)

        g.rectangle([x0, M, x0 + pw, H - M], outline="black")
        g.text((x0, M - 40), f"held-out {'CPM' if key == 'cpm' else 'Dice >= 6 mm'} vs reviewed cases", fill="black")
        for v in np.linspace(lo, hi, 5):
            g.text((x0 - 40, xy(0, v)[1] - 6), f"{v:.2f}", fill="black")
        for n in xs:
            g.text((xy(n, lo)[0] - 6, H - M + 6), str(n), fill="black")
        for r in results:
            pts = [xy(n, value_at(r["curve"], n, key)) for n in xs if value_at(r["curve"], n, key) is not None]
            if len(pts) > 1:
                g.line(pts, fill=tuple(int(c + (255 - c) * 0.6) for c in colours[r["order"]]), width=1)
        for i, (o, t) in enumerate(summary["mean"].items()):
            pts = [xy(n, v) for n, v in zip(xs, t[key]) if v is not None]
            if len(pts) > 1:
                g.line(pts, fill=colours[o], width=3)
            if panel == 0:
                g.text((x0 + 8, M + 8 + 14 * i), ORDERS[o], fill=colours[o])
    img.save(path)
    return path


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    import torch

    torch.set_num_threads(max(1, args.threads))
    OUT.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    baseline = weak_baseline(args)
    with tempfile.TemporaryDirectory(prefix="radloop-al-") as tmp:
        workdir = Path(tmp)
        setup_django(workdir, args, baseline)
        logging.getLogger("webapp").setLevel(logging.ERROR)
        pool, scores, predictors = Pool(args), Scores(heldout_cases(args)), CachedPredictors()
        results = []
        for seed in args.seeds:
            for order in args.orders:
                results.append(simulate(order, seed, args, workdir, pool, scores, predictors))
    summary = report(results, args)
    png = plot(results, summary, args.out.with_suffix(".png"))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "summary": summary,
         "results": results}, indent=1, default=float))
    print(f"\nwrote {png} and {args.out.with_suffix('.json')}; inference memo {predictors.hits} hits / "
          f"{predictors.misses} runs; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
