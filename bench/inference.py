"""Time detection + segmentation on a 512 x 512 x ~200 phantom CT, with the bare network forwards.

    python bench/inference.py [--model ml/weights/baseline-v1.pt] [--seed 4242] [--threads 2] [--tta]

Prints the whole ``Predictor.predict`` time and its stages, the time of the bare network forward
passes measured in the same run (so pipeline overhead is visible), and peak resident memory.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ml.inference import Predictor  # noqa: E402
from ml.phantom import PhantomConfig, generate_phantom  # noqa: E402
from ml.volumes import Volume  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ml/weights/baseline-v1.pt")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tta", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    ph = generate_phantom(PhantomConfig.preset("full", chest_length_mm_range=(250.0, 250.0),
                                               slice_thickness_mm=1.25), seed=args.seed)
    t_gen = time.perf_counter() - t
    rss_before = peak_rss_mb()
    predictor = Predictor.from_checkpoint(args.model)
    volume = Volume.from_phantom(ph)
    predictor.predict(volume)                      # warm-up (allocator, oneDNN kernels)
    t = time.perf_counter()
    pred = predictor.predict(volume, tta=args.tta)
    wall = time.perf_counter() - t
    print(f"CT {volume.shape} (Z, Y, X) spacing {tuple(round(s, 3) for s in volume.spacing_zyx_mm)} mm; "
          f"{len(ph.lesions)} lesions; phantom generated in {t_gen:.1f} s; device {pred.device}, "
          f"{torch.get_num_threads()} threads, TTA {args.tta}")
    print(f"detection + segmentation (Predictor.predict): {wall:.2f} s, {len(pred.findings)} findings")
    for stage, seconds in pred.timings.items():
        print(f"  {stage:<16} {seconds:7.2f} s")
    forward = pred.timings.get("detector_net", 0.0) + pred.timings.get("segmenter_net", 0.0)
    print(f"bare network forwards (detector sliding window + segmenter cubes): {forward:.2f} s "
          f"({100 * forward / wall:.0f} % of the pipeline); overhead {wall - forward:.2f} s")
    print(f"peak RSS: {peak_rss_mb():.0f} MB (after phantom generation: {rss_before:.0f} MB)")
    print(f"goal < 60 s on 2 CPU cores: {'met' if wall < 60 else 'MISSED'}")


if __name__ == "__main__":
    main()
