"""One short training loop: sample -> forward -> loss -> step, with checkpoint/resume and progress lines.

Deterministic for a seed: the batch of step ``i`` is drawn from ``default_rng([seed, i])`` and the
network is initialised under ``torch.manual_seed(seed)``, so a resumed run continues exactly.
CUDA + AMP (bfloat16 autocast) when the device is CUDA; plain float32 on CPU.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyper-parameters (saved in the model file's training summary)."""

    steps: int = 1000
    batch: int = 4
    lr: float = 1e-3
    min_lr_fraction: float = 0.05
    warmup_steps: int = 30
    weight_decay: float = 1e-5
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr_fraction * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


class Progress:
    """Logs ``name step/total loss=... it/s ETA m:ss`` lines (a tiny tqdm replacement)."""

    def __init__(self, name: str, total: int, start: int = 0):
        self.name, self.total, self.start, self.t0 = name, total, start, time.monotonic()

    def line(self, step: int, loss: float, extra: dict) -> str:
        done = step + 1 - self.start
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - step - 1) / max(rate, 1e-9)
        parts = " ".join(f"{k}={v:.3f}" for k, v in extra.items())
        return (f"{self.name} {step + 1}/{self.total} loss={loss:.4f} {parts} "
                f"{rate:.2f} it/s ETA {int(eta // 60)}:{int(eta % 60):02d}")


def _save(path: Path, net, opt, step: int, history: list) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step, "history": history}, tmp)
    tmp.replace(path)


def train_model(net: torch.nn.Module, sample: Callable, loss_fn: Callable, cfg: TrainConfig, *, name: str,
                device: torch.device, checkpoint: Path | None = None, resume: bool = True,
                on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``net`` in place for ``cfg.steps`` steps and return the logged history.

    ``sample(rng, batch) -> tuple of float32 arrays`` (inputs first); ``loss_fn(out, *targets) ->
    (loss tensor, dict of floats)``. ``checkpoint``: where the resumable training state lives.
    ``on_step``: called after every optimiser step with ``{"step": done, "steps": total, "loss": this
    step's loss, "lr": ..., "eta_s": seconds left at the rate of this session}`` (throttle on the caller's side).
    """
    net.to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    if checkpoint is not None and resume and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        net.load_state_dict(state["model"]), opt.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), list(state["history"])
        log.info("%s: resumed from %s at step %d", name, checkpoint, start)
    amp = device.type == "cuda"
    progress, running = Progress(name, cfg.steps, start), []
    for step in range(start, cfg.steps):
        batch = [torch.from_numpy(a).to(device, non_blocking=True) for a in sample(np.random.default_rng([cfg.seed, step]), cfg.batch)]
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(batch[0])
        loss, parts = loss_fn(out.float(), *batch[1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        running.append({"loss": float(loss.detach()), **parts})
        if on_step is not None:
            rate = (step + 1 - start) / max(time.monotonic() - progress.t0, 1e-9)
            on_step({"step": step + 1, "steps": cfg.steps, "loss": running[-1]["loss"], "lr": lr_at(cfg, step),
                     "eta_s": (cfg.steps - step - 1) / max(rate, 1e-9)})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            mean = {k: float(np.mean([r[k] for r in running])) for k in running[0]}
            history.append({"step": step + 1, **mean})
            log.info(progress.line(step, mean.pop("loss"), mean))
            running = []
        if checkpoint is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            _save(Path(checkpoint), net, opt, step + 1, history)
    return history
