"""Inline SVG plots for the model registry page (matplotlib is not a dependency of the web app).

Every label goes through ``escape``; numbers are formatted by us. The SVGs are small (a few kB).
"""
from __future__ import annotations

import math

from django.utils.html import escape
from django.utils.safestring import mark_safe

W, H, LEFT, RIGHT, TOP, BOTTOM = 520, 280, 48, 130, 14, 36
COLOURS = ("#4f8ff7", "#e8793b", "#46b37b", "#c75bd6", "#d4b13a", "#5bc2d6", "#e05a6e", "#8a8f98")
FP_TICKS = (0.125, 0.25, 0.5, 1, 2, 4, 8)


def _frame(x_ticks: list[tuple[float, str]], x_label: str, y_label: str, sx, sy) -> list[str]:
    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="plot-bg"/>']
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = sy(value)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.2f}</text>')
    for value, text in x_ticks:
        x = sx(value)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{H - BOTTOM}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle">{escape(text)}</text>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2:.0f}" y="{H - 4}" text-anchor="middle">{escape(x_label)}</text>'
                 f'<text x="12" y="{(TOP + H - BOTTOM) / 2:.0f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(TOP + H - BOTTOM) / 2:.0f})">{escape(y_label)}</text>')
    return parts


def _legend(names: list[str]) -> list[str]:
    return [f'<rect x="{W - RIGHT + 10}" y="{TOP + 4 + 16 * i}" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/>'
            f'<text x="{W - RIGHT + 24}" y="{TOP + 13 + 16 * i}">{escape(name)}</text>' for i, name in enumerate(names)]


def _svg(parts: list[str], title: str) -> str:
    return mark_safe(f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
                     f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
                     + "".join(parts) + "</svg>")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def froc_svg(curves: list[tuple[str, list, list]], title: str) -> str:
    """FROC: sensitivity against false positives per scan (log axis, 1/8 .. 8), one line per curve."""
    lo, hi = math.log2(FP_TICKS[0]), math.log2(FP_TICKS[-1])
    sx = lambda fp: LEFT + (math.log2(min(max(fp, FP_TICKS[0]), FP_TICKS[-1])) - lo) / (hi - lo) * (W - LEFT - RIGHT)  # noqa: E731
    sy = lambda s: TOP + (1 - s) * (H - TOP - BOTTOM)  # noqa: E731
    parts = _frame([(t, f"{t:g}" if t >= 1 else f"1/{int(1 / t)}") for t in FP_TICKS], "false positives per scan",
                   "sensitivity", sx, sy)
    for i, (_, fps, sens) in enumerate(curves):
        points = [(sx(f), sy(s)) for f, s in zip(fps, sens) if _finite(f) and _finite(s) and f > 0]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="2"/>')
    parts += _legend([name for name, _, _ in curves])
    return _svg(parts, title)


def history_svg(versions: list[int], series: dict[str, list], title: str) -> str:
    """Metrics (0..1) per model version: one line with dots per metric; gaps where unmeasured."""
    n = max(len(versions), 1)
    sx = lambda i: LEFT + (i + 0.5) / n * (W - LEFT - RIGHT)  # noqa: E731
    sy = lambda v: TOP + (1 - min(max(v, 0.0), 1.0)) * (H - TOP - BOTTOM)  # noqa: E731
    parts = _frame([(i, f"v{v}") for i, v in enumerate(versions)], "model version", "metric", sx, sy)
    for k, (name, values) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [(sx(i), sy(v)) for i, v in enumerate(values) if _finite(v)]
        if len(points) > 1:
            parts.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}" fill="none" '
                         f'stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in points]
    parts += _legend(list(series))
    return _svg(parts, title)
