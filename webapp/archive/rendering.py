"""Turn stored DICOM pixels into display images (thumbnails now, rendered WADO-RS later).

Display only: windowing here never feeds a model. Values are modality values (HU for CT) after
RescaleSlope/Intercept.
"""
from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_rescale, pixel_array

# (center, width) when the file recommends none.
DEFAULT_WINDOWS = {"CT": (40.0, 400.0)}


def read_frame(path: str, index: int = 0) -> tuple[np.ndarray, pydicom.Dataset]:
    """One frame as float32 modality values, shape (rows, cols) or (rows, cols, 3) for colour."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames") or 1)
    arr = pixel_array(path, index=min(index, frames - 1) if frames > 1 else None)
    if int(ds.get("SamplesPerPixel") or 1) == 1:
        arr = apply_rescale(arr, ds).astype(np.float32)
    return arr, ds


def window_to_uint8(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Linear VOI window (PS3.3 C.11.2.1.2, 'LINEAR') to 0..255."""
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1) / 2
    scaled = (values - low) / (width - 1) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def display_window(ds: pydicom.Dataset, values: np.ndarray) -> tuple[float, float]:
    """The file's first recommended window, else the modality default, else the 1-99th percentile."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        if center is not None and width is not None:
            center = center[0] if isinstance(center, pydicom.multival.MultiValue) else center
            width = width[0] if isinstance(width, pydicom.multival.MultiValue) else width
            if float(width) > 0:
                return float(center), float(width)
    except (TypeError, ValueError):
        pass
    modality = str(ds.get("Modality", ""))
    if modality in DEFAULT_WINDOWS:
        return DEFAULT_WINDOWS[modality]
    low, high = np.percentile(values, [1, 99])
    return float((low + high) / 2), float(max(high - low, 1.0))


def thumbnail_png(path: str, *, size: int = 192, frame: int | None = None) -> bytes:
    """A PNG thumbnail (longest side ``size`` px, aspect from PixelSpacing) of one frame."""
    ds_head = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(ds_head.get("NumberOfFrames") or 1)
    values, ds = read_frame(path, frames // 2 if frame is None else frame)
    if values.ndim == 3:  # colour: pixel_array already returns RGB
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="RGB")
    else:
        center, width = display_window(ds, values)
        pixels = window_to_uint8(values, center, width)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            pixels = 255 - pixels
        image = Image.fromarray(pixels, mode="L")
    spacing = ds.get("PixelSpacing")
    aspect = 1.0
    try:
        if spacing is not None:
            aspect = float(spacing[0]) / float(spacing[1])  # row spacing / column spacing
    except (TypeError, ValueError, ZeroDivisionError, IndexError):
        aspect = 1.0
    width_px, height_px = image.width, image.height * aspect
    scale = size / max(width_px, height_px)
    image = image.resize((max(1, round(width_px * scale)), max(1, round(height_px * scale))), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
