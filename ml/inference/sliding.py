"""Sliding-window inference with Gaussian blending; takes any callable (B, C, ...) -> (B, C', ...)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def gaussian_weights(window: tuple[int, int, int], sigma_fraction: float = 0.125) -> np.ndarray:
    """(Z, Y, X) float32 Gaussian importance map (sigma = ``sigma_fraction`` * window), min 1e-3 of max."""
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / max(n * sigma_fraction, 1e-6)) ** 2) for n in window]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def _starts(n: int, window: int, step: int) -> list[int]:
    if n <= window:
        return [0]
    starts = list(range(0, n - window, step)) + [n - window]
    return sorted(set(starts))


def sliding_window(image: np.ndarray, predict: Callable[[torch.Tensor], torch.Tensor], window, *,
                   overlap: float = 0.25, batch_size: int = 2, divisor: int = 1, device="cpu",
                   pad_value: float = -1.0, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Run ``predict`` over ``image`` (C, Z, Y, X) float32 in overlapping windows; blend with Gaussian weights.

    The image is padded (``pad_value``) to at least ``window`` and to a multiple of ``divisor``.
    Returns (C_out, Z, Y, X) float32 on the input grid. ``predict`` gets a (B, C, *window) tensor on ``device``.
    """
    shape = np.asarray(image.shape[1:])
    win = np.minimum(np.broadcast_to(np.asarray(window), 3), np.ceil(shape / divisor).astype(int) * divisor)
    win = np.maximum(win, divisor)
    padded_shape = np.maximum(shape, win)
    padded = np.full((image.shape[0], *padded_shape), pad_value, np.float32)
    padded[:, :shape[0], :shape[1], :shape[2]] = image
    step = np.maximum(1, (win * (1 - overlap)).astype(int))
    corners = [(z, y, x) for z in _starts(padded_shape[0], win[0], step[0])
               for y in _starts(padded_shape[1], win[1], step[1]) for x in _starts(padded_shape[2], win[2], step[2])]
    weights = gaussian_weights(tuple(int(w) for w in win))
    out, norm = None, np.zeros(padded_shape, np.float32)
    for i in range(0, len(corners), batch_size):
        group = corners[i:i + batch_size]
        batch = np.stack([padded[:, z:z + win[0], y:y + win[1], x:x + win[2]] for z, y, x in group])  # (B, C, *win)
        with torch.no_grad():
            logits = predict(torch.from_numpy(batch).to(device)).float().cpu().numpy()
        if out is None:
            out = np.zeros((logits.shape[1], *padded_shape), np.float32)
        for (z, y, x), pred in zip(group, logits):
            out[:, z:z + win[0], y:y + win[1], x:x + win[2]] += pred * weights
            norm[z:z + win[0], y:y + win[1], x:x + win[2]] += weights
        if progress is not None:
            progress(min(1.0, (i + len(group)) / len(corners)))
    out /= norm
    return out[:, :shape[0], :shape[1], :shape[2]]
