"""What verifying a model file costs (issue 12): SHA-256 of the shipped model, against loading it.

    .venv/bin/python bench/model_integrity.py [--model ml/weights/baseline-v1.pt] [--repeat 20]

Prints the file size, the time of ``ml.checkpoint.file_sha256`` (cold: first read; warm: page cache),
of the stat call that keys the per-process cache in ``webapp.modelops.services.verify_model_file``, and
of ``Predictor.from_checkpoint`` (what a worker does once per model), so the check can be judged
against the load it guards. Medians of ``--repeat`` runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.checkpoint import file_sha256  # noqa: E402


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "ml" / "weights" / "baseline-v1.pt"))
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    path = Path(args.model)
    size = path.stat().st_size

    t = time.perf_counter()
    file_sha256(path)
    first = time.perf_counter() - t
    warm = timed(lambda: file_sha256(path), args.repeat)
    st = timed(lambda: os.stat(path), args.repeat * 50)

    from ml.inference import Predictor

    load = timed(lambda: Predictor.from_checkpoint(path), max(3, args.repeat // 5))
    print(f"model file          {path} ({size / 1e6:.2f} MB)")
    print(f"sha256, first read  {first * 1e3:.2f} ms")
    print(f"sha256, warm        {warm * 1e3:.2f} ms  ({size / warm / 1e6:.0f} MB/s)")
    print(f"stat (cache key)    {st * 1e6:.1f} us")
    print(f"Predictor load      {load * 1e3:.1f} ms  (the hash is {100 * warm / load:.1f} % of it)")


if __name__ == "__main__":
    main()
