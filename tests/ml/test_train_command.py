"""``python -m ml.train`` end to end on a few small phantoms: the CPU path trains detector and
segmenter in two processes; the model file must be the one a sequential run writes."""
from __future__ import annotations

import pytest
import torch

from ml.checkpoint import load_model_file
from ml.inference import Predictor
from ml.networks import UNet3D
from ml.train import DETECTOR, SEGMENTER, main


def _train(tmp_path, name: str, threads: int):
    out = tmp_path / f"{name}.pt"
    main(["--out", str(out), "--cache", str(tmp_path / f"cache-{name}"), "--n-small", "2", "--n-full", "0",
          "--det-steps", "4", "--seg-steps", "3", "--lr", "0.3", "--threads", str(threads), "--workers", "1", "--device", "cpu"])
    return out


def test_the_training_command_writes_a_usable_model_and_two_processes_change_nothing(tmp_path):
    parallel, sequential = _train(tmp_path, "parallel", 2), _train(tmp_path, "sequential", 1)
    a, b = load_model_file(parallel), load_model_file(sequential)
    assert a["training"]["parallel_cpu_processes"] == 2 and b["training"]["parallel_cpu_processes"] == 1
    for m in (a, b):
        assert m["training"]["detector"]["steps_done"] == 4 and m["training"]["segmenter"]["steps_done"] == 3
        assert m["training"]["data"]["seed_ranges"]["small"] == [10_000, 10_001]
    for k, (net, config) in enumerate((("detector", DETECTOR), ("segmenter", SEGMENTER))):
        torch.manual_seed(0 + k)
        init = UNet3D(config).state_dict()
        wa, wb = a["models"][net]["state_dict"], b["models"][net]["state_dict"]
        assert wa.keys() == wb.keys() == init.keys()
        # training moved the weights (lr 0.3 warming up: ~0.1 per weight over 4 steps) ...
        assert max(float((wa[n].float() - init[n]).abs().max()) for n in init) > 0.05
        # ... and both runs moved them alike: same seeds, same batches, only float16 storage and
        # thread-count rounding differ
        for n in wa:
            torch.testing.assert_close(wa[n].float(), wb[n].float(), atol=3e-3, rtol=1e-2)
        ha, hb = a["training"][net]["history"][-1], b["training"][net]["history"][-1]
        assert ha["loss"] == pytest.approx(hb["loss"], rel=1e-3)
    predictor = Predictor.from_checkpoint(parallel)
    assert predictor.version.startswith("parallel+")
