"""FROC plot drawn with Pillow (matplotlib is not installed): log2 FP/scan axis 1/8..8, sensitivity 0..1."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .metrics import CPM_FP_RATES, Froc

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
W, H, M = 640, 480, 60


def _xy(fp: float, sens: float) -> tuple[float, float]:
    lx = (np.log2(max(fp, 1 / 16)) + 4) / 7.0          # 1/16 .. 8 -> 0 .. 1
    return M + lx * (W - 2 * M), H - M - sens * (H - 2 * M)


def draw_froc(curves: dict[str, Froc], path, title: str = "FROC") -> Path:
    """Write a PNG with one FROC curve per name (legend shows CPM)."""
    img = Image.new("RGB", (W, H), "white")
    g = ImageDraw.Draw(img)
    g.rectangle([M, M, W - M, H - M], outline="black")
    for r in (1 / 16, *CPM_FP_RATES):
        x, _ = _xy(r, 0)
        g.line([x, M, x, H - M], fill=(225, 225, 225))
        g.text((x - 10, H - M + 5), f"{r:g}" if r >= 1 else f"1/{int(round(1 / r))}", fill="black")
    for s in np.linspace(0, 1, 6):
        _, y = _xy(1, s)
        g.line([M, y, W - M, y], fill=(225, 225, 225))
        g.text((M - 30, y - 6), f"{s:.1f}", fill="black")
    g.text((W / 2 - 60, H - M + 25), "false positives per scan", fill="black")
    g.text((10, M - 25), "sensitivity", fill="black")
    g.text((W / 2 - 40, 10), title, fill="black")
    for k, (name, fr) in enumerate(curves.items()):
        colour = COLOURS[k % len(COLOURS)]
        keep = fr.fp_per_scan <= 8.0                  # the plot stops at 8 FP per scan
        fps = np.concatenate([fr.fp_per_scan[keep], [8.0]])
        sens = np.concatenate([fr.sensitivity[keep], [fr.sensitivity[keep][-1]]])
        pts = []
        for i in range(len(fps)):   # step curve: sensitivity jumps at each threshold
            if i:
                pts.append(_xy(min(fps[i], 8.0), sens[i - 1]))
            pts.append(_xy(min(fps[i], 8.0), sens[i]))
        g.line(pts, fill=colour, width=2)
        g.text((W - M - 200, H - M - 20 - 15 * k), f"{name}: CPM {fr.cpm():.3f}", fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
