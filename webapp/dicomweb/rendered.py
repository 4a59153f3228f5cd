"""Rendered and thumbnail resources (PS3.18 §9.5, §10.4.1.1.3): consumer-ready PNG / JPEG.

Images keep their physical aspect (PixelSpacing) and are never larger than MAX_RENDERED_SIDE on a
side: a larger viewport is scaled down to fit, so no request allocates more than a few MB.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from webapp.archive.rendering import MAX_RENDERED_SIDE, display_window, fit, window_to_uint8

from .errors import bad_request, not_acceptable
from .media import MediaRange

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
MAX_VIEWPORT_DIGITS = 9  # a viewport side is a number of pixels, not a 1,000-digit integer


@dataclass(frozen=True)
class RenderParams:
    window: tuple[float, float, str] | None  # (center, width, function)
    viewport: tuple[int, int] | None  # (width, height) in pixels
    quality: int
    mime: str


def parse_params(query, ranges: list[MediaRange], default_mime: str = "image/jpeg") -> RenderParams:
    window = None
    if query.get("window"):
        parts = query["window"].split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise bad_request("window is center,width[,function] with numbers, e.g. window=-600,1500,linear") from None
        function = parts[2].strip().lower() if len(parts) > 2 else "linear"
        if width <= 0 or function not in ("linear", "linear_exact", "sigmoid") or len(parts) > 3:
            raise bad_request("window width must be > 0 and function one of linear, linear_exact, sigmoid")
        window = (center, width, function)
    viewport = None
    if query.get("viewport"):
        sides = query["viewport"].split(",")
        if len(sides) != 2 or not all(v.strip().isdigit() and len(v.strip()) <= MAX_VIEWPORT_DIGITS for v in sides):
            raise bad_request("viewport is width,height in pixels, e.g. viewport=256,256")
        vw, vh = (int(v) for v in sides)
        if vw < 1 or vh < 1:
            raise bad_request("viewport sides must be at least 1 pixel")
        viewport = (min(vw, MAX_RENDERED_SIDE), min(vh, MAX_RENDERED_SIDE))
    try:
        quality = int(query.get("quality", 90))
    except ValueError:
        raise bad_request("quality is a whole number from 1 to 100") from None
    if not 1 <= quality <= 100:
        raise bad_request("quality is a whole number from 1 to 100")
    return RenderParams(window, viewport, quality, _pick_format(ranges, default_mime))


def _pick_format(ranges: list[MediaRange], default: str) -> str:
    for r in ranges:
        if r.mime in FORMATS:
            return r.mime
        if r.mime in ("*/*", "image/*"):
            return default
    raise not_acceptable("rendered images are available as image/jpeg or image/png")


def render(values: np.ndarray, header, params: RenderParams) -> bytes:
    """values: (rows, cols) modality values or (rows, cols, 3) colour; the header gives the window,
    photometric interpretation and PixelSpacing (aspect). At most MAX_RENDERED_SIDE per side."""
    if values.ndim == 3:
        image = Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8), mode="RGB")
    else:
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        center, width, function = params.window or (*display_window(header, values), "linear")
        if function == "sigmoid":
            pixels = (255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))).astype(np.uint8)
        elif function == "linear_exact":
            pixels = np.clip((values - (center - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
        else:
            pixels = window_to_uint8(values, center, width)
        if str(header.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            pixels = 255 - pixels
        image = Image.fromarray(pixels, mode="L")
    # Without a viewport: the image's own size (aspect-corrected), within the cap.
    image = fit(image, header, params.viewport or (min(image.width, MAX_RENDERED_SIDE), MAX_RENDERED_SIDE))
    out = io.BytesIO()
    if params.mime == "image/jpeg":
        image.save(out, format="JPEG", quality=params.quality)
    else:
        image.save(out, format="PNG", compress_level=1)  # fast: rendered PNGs are made per request
    return out.getvalue()
