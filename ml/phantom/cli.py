"""Command line: ``python -m ml.phantom --n 3 --seed 7 --out DIR [--preset full|small|tiny]``.

Writes each study to ``DIR/<patient_id>/``: the DICOM slices in ``dicom/`` and the
ground truth (``ground_truth.json``, ``label_mask.npz``) beside them. Study ``i`` of
seed ``S`` is the same whatever ``--n`` is: its seed is derived from (S, i) with
numpy's SeedSequence.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

from .config import PRESETS, PhantomConfig
from .dicom_io import write_dicom_series
from .generate import generate_phantom
from .ground_truth import write_ground_truth
from .phantom import Phantom

log = logging.getLogger("ml.phantom")
DICOM_SUBDIR = "dicom"


def study_seed(seed: int, index: int) -> int:
    """Seed of study ``index`` in a run with base ``seed`` (independent of the run's size)."""
    child = np.random.SeedSequence(seed, spawn_key=(index,))
    return int(child.generate_state(1, np.uint32)[0])


def patient_id_for(seed: int, index: int) -> str:
    return f"PHANTOM-{seed}-{index:03d}"


def write_study(cfg: PhantomConfig, seed: int, index: int, out: Path, *, overwrite: bool = False,
                signed: bool = False) -> tuple[str, Phantom, float]:
    """Generate and write study ``index``; returns (patient id, phantom, seconds)."""
    t0 = time.perf_counter()
    pid = patient_id_for(seed, index)
    folder = out / pid
    dicom_dir = folder / DICOM_SUBDIR
    old = sorted(dicom_dir.glob("CT*.dcm")) if dicom_dir.exists() else []
    if old and not overwrite:
        raise FileExistsError(f"{dicom_dir} already holds {len(old)} slices; use --overwrite to replace them")
    for path in old:
        path.unlink()
    ph = generate_phantom(cfg, seed=study_seed(seed, index))
    paths = write_dicom_series(ph, dicom_dir, patient_id=pid, patient_name=f"PHANTOM^S{seed}^N{index:03d}",
                               signed=signed)
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)   # the identifiers the writer chose
    write_ground_truth(ph, folder, dicom={
        "patient_id": pid, "study_uid": str(first.StudyInstanceUID), "series_uid": str(first.SeriesInstanceUID),
        "folder": DICOM_SUBDIR, "n_files": len(paths), "cli_seed": seed, "cli_index": index})
    return pid, ph, time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ml.phantom", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1, help="number of studies (default 1)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--start", type=int, default=0, help="index of the first study (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--signed", action="store_true", help="store int16 pixels (default: uint16, intercept -1024)")
    p.add_argument("--overwrite", action="store_true", help="replace slices of studies already written")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.n < 1 or args.seed < 0 or args.start < 0:
        log.error("--n must be >= 1, --seed and --start >= 0")
        return 2
    cfg = PhantomConfig.preset(args.preset)
    for index in range(args.start, args.start + args.n):
        try:
            pid, ph, seconds = write_study(cfg, args.seed, index, args.out, overwrite=args.overwrite,
                                           signed=args.signed)
        except (FileExistsError, OSError) as exc:
            log.error("%s", exc)
            return 1
        z, y, x = ph.shape_zyx
        dz, dy, dx = ph.spacing_zyx_mm
        print(f"{pid}  shape={z}x{y}x{x}  spacing={dz:g}x{dy:.3f}x{dx:.3f} mm  "
              f"lesions={len(ph.lesions)}  {seconds:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
