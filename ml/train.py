"""Train the baseline detector and segmenter from scratch on phantoms; write one model file.

    python -m ml.train --out ml/weights/baseline-v1.pt [--n-small 120 --n-full 64]
                       [--det-steps 1600 --seg-steps 1300] [--cache var/ml-cache] [--workers 2]

Phantoms are generated once and cached as ``.npz`` (``--cache``); training state is
checkpointed in the cache folder and resumed when the command is re-run with the same options.
``--det-steps 0 --seg-steps 0`` exports whatever training state exists (e.g. an interrupted run).
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import code_version, pack_model, save_model_file
from .networks import UNet3D, UNetConfig
from .preprocessing import preprocessing_constants
from .training.data import (DET_SPACING_MM, SEG_SPACING_MM, TRAIN_SEED_FULL, TRAIN_SEED_SMALL, build_cache,
                            load_cases, training_plan)
from .training.losses import detection_loss, dice_bce_loss
from .training.loop import TrainConfig, train_model
from .training.samplers import DET_PATCH, SEG_PATCH, DetectionSampler, SegmentationSampler

log = logging.getLogger("ml.train")

DETECTOR = UNetConfig(in_channels=1, out_channels=5, channels=(8, 16, 32, 64), out_bias=(-4.0, 1.9, 0.0, 0.0, 0.0))
SEGMENTER = UNetConfig(in_channels=1, out_channels=1, channels=(8, 16, 32, 64), out_bias=(-2.0,))
INFERENCE = {"det_spacing_mm": DET_SPACING_MM, "seg_spacing_mm": SEG_SPACING_MM, "seg_patch": SEG_PATCH,
             "det_window": 96, "det_overlap": 0.25, "score_threshold": 0.05, "max_findings": 30,
             "nms_distance_factor": 1.0, "seg_threshold": 0.5,
             "score_mode": "detector_x_segmenter"}


def pick_device(name: str | None = None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _seg_loss(out, label):
    return dice_bce_loss(out, label)


NETWORKS = {"detector": (DETECTOR, DET_PATCH), "segmenter": (SEGMENTER, SEG_PATCH)}


def train_network(kind: str, cache_paths: list, cfg: TrainConfig, device: str, state_path: Path,
                  threads: int | None = None, on_step=None) -> tuple[UNet3D, list[dict]]:
    """Train (or resume, or just export) one network of the baseline; returns it and its logged history.

    Runs in this process or in a spawned one (``threads`` then sets its torch threads). The network is
    initialised under ``torch.manual_seed(cfg.seed + k)`` (k = 0 detector, 1 segmenter), so the result
    does not depend on which process trained it."""
    if threads:
        torch.set_num_threads(threads)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config, patch = NETWORKS[kind]
    torch.manual_seed(cfg.seed + list(NETWORKS).index(kind))
    net = UNet3D(config)
    cases = load_cases(cache_paths)
    if kind == "detector":
        sample, loss = DetectionSampler(cases, patch).sample, detection_loss
    else:
        sample, loss = SegmentationSampler(cases, patch).sample, _seg_loss
    history = train_model(net, sample, loss, cfg, name=kind, device=torch.device(device), checkpoint=state_path,
                          on_step=on_step)
    return net.cpu(), history


def _segmenter_in_child(*args) -> list[dict]:
    """Spawned-process entry: train the segmenter, return its history (the weights are in its state file)."""
    return train_network("segmenter", *args)[1]


def train_all(args) -> Path:
    t0 = time.monotonic()
    device = pick_device(args.device)
    plan = training_plan(args.n_small, args.n_full)
    paths = build_cache(args.cache, plan, workers=args.workers)
    cases = load_cases(paths)
    t_data = time.monotonic() - t0
    n_lesions = sum(len(c["lesions"]) for c in cases)
    del cases
    log.info("data: %d cases, %d lesions (%.0f s)", len(plan), n_lesions, t_data)
    base = TrainConfig(batch=args.batch, seed=args.seed, lr=args.lr)
    det_cfg, seg_cfg = replace(base, steps=args.det_steps), replace(base, steps=args.seg_steps)
    det_state, seg_state = Path(args.cache) / "detector.state", Path(args.cache) / "segmenter.state"
    # On a CPU, two processes with half the threads each train ~1.4x faster than one after the
    # other (3D convolutions of this size do not scale to 2 threads); on a GPU, one after the other.
    parallel = device.type == "cpu" and args.threads >= 2 and args.det_steps and args.seg_steps
    if parallel:
        import concurrent.futures
        import multiprocessing as mp
        half = args.threads // 2
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            seg_job = pool.submit(_segmenter_in_child, paths, seg_cfg, str(device), seg_state, args.threads - half)
            torch.set_num_threads(half)

            def all_threads_once_segmenter_done(_):
                if seg_job.done() and torch.get_num_threads() != args.threads:
                    torch.set_num_threads(args.threads)
            detector, det_hist = train_network("detector", paths, det_cfg, str(device), det_state,
                                               on_step=all_threads_once_segmenter_done)
            seg_hist = seg_job.result()
        torch.set_num_threads(args.threads)
        segmenter = UNet3D(SEGMENTER)               # the child's finished weights, from its state file
        segmenter.load_state_dict(torch.load(seg_state, map_location="cpu", weights_only=True)["model"])
    else:
        detector, det_hist = train_network("detector", paths, det_cfg, str(device), det_state)
        segmenter, seg_hist = train_network("segmenter", paths, seg_cfg, str(device), seg_state)
    training = {
        "data": {"generator": "ml.phantom", "presets": {"small": args.n_small, "full": args.n_full},
                 "seed_ranges": {"small": [TRAIN_SEED_SMALL, TRAIN_SEED_SMALL + args.n_small - 1],
                                 "full": [TRAIN_SEED_FULL, TRAIN_SEED_FULL + args.n_full - 1]},
                 "cases": len(plan), "lesions": n_lesions},
        "detector": {"train_config": det_cfg.to_dict(), "patch": DET_PATCH, "history": det_hist[-5:],
                     "steps_done": det_hist[-1]["step"] if det_hist else 0},
        "segmenter": {"train_config": seg_cfg.to_dict(), "patch": SEG_PATCH, "history": seg_hist[-5:],
                      "steps_done": seg_hist[-1]["step"] if seg_hist else 0},
        "device": str(device), "parallel_cpu_processes": 2 if parallel else 1, "torch": str(torch.__version__), "wall_time_s": round(time.monotonic() - t0, 1),
        "data_time_s": round(t_data, 1),
    }
    path = save_model_file(args.out, {
        "version": f"{Path(args.out).stem}+{code_version()}",
        "models": {"detector": pack_model(detector), "segmenter": pack_model(segmenter)},
        "preprocessing": preprocessing_constants(), "inference": dict(INFERENCE), "training": training,
        "metrics": {}})
    log.info("wrote %s (%.0f s total)", path, time.monotonic() - t0)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="ml/weights/baseline-v1.pt")
    p.add_argument("--cache", default="var/ml-cache")
    p.add_argument("--n-small", type=int, default=120)
    p.add_argument("--n-full", type=int, default=64)
    p.add_argument("--det-steps", type=int, default=1600)
    p.add_argument("--seg-steps", type=int, default=1300)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    train_all(args)


if __name__ == "__main__":
    main()
