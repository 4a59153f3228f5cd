"""Turn stored DICOM pixels into display images (thumbnails, rendered WADO-RS).

Display only: windowing here never feeds a model. Values are modality values (HU for CT) after
RescaleSlope/Intercept.

Stored files are untrusted: every attribute is read defensively, a deflated data set (stored by an
older version) is inflated with a hard cap, and anything that cannot be shown raises
``UnrenderableImage`` with a reason a person can read (never a value from the file).
"""
from __future__ import annotations

import io
import logging
import math
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_rescale, pixel_array

log = logging.getLogger(__name__)

DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_HEADER_BYTES = 16 * 2**20  # what a deflated data set may inflate to before its pixel data
MAX_PIXEL_BYTES = 1024**3  # the most pixel data one stored image may claim to hold
MAX_RENDERED_SIDE = 2048  # longest side of a rendered or thumbnail image, in pixels
PLACEHOLDER_GREY = 48


class UnrenderableImage(ValueError):
    """The stored pixels cannot be read or shown; ``str()`` is the reason, safe to send."""


def int_attr(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    """An integer attribute, or ``default`` when it is missing, empty or not a number."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return default
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def float_pair(ds: pydicom.Dataset, keyword: str) -> tuple[float, float] | None:
    """Two finite positive numbers (e.g. PixelSpacing), or None."""
    try:
        value = ds.get(keyword)
        first, second = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        return None
    if not (math.isfinite(first) and math.isfinite(second) and first > 0 and second > 0):
        return None
    return first, second


def read_stored(path: str, *, stop_before_pixels: bool = True) -> pydicom.Dataset:
    """A stored file's data set; a deflated one is inflated with a hard cap.

    Raises UnrenderableImage when the file is missing or not readable DICOM.
    """
    try:
        with open(path, "rb") as fp:
            pydicom.filereader.read_preamble(fp, False)
            meta = pydicom.filereader._read_file_meta_info(fp)
            if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
                fp.seek(0)
                return pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels)
            start = fp.tell()
    except FileNotFoundError:
        raise UnrenderableImage("the stored file of this image is missing") from None
    except Exception as exc:  # noqa: BLE001 - anything pydicom raises on a damaged file
        log.warning("rendering: stored file not readable (%s)", type(exc).__name__)
        raise UnrenderableImage("the stored file of this image is not readable DICOM") from None
    return _read_deflated(path, start, meta, stop_before_pixels)


def _read_deflated(path: str, start: int, meta, stop_before_pixels: bool) -> pydicom.Dataset:
    head, complete = _inflate(path, start, MAX_HEADER_BYTES)
    header = _parse(head, stop_before_pixels=True)
    if stop_before_pixels:
        header.file_meta = meta
        return header
    rows, cols = int_attr(header, "Rows", 0), int_attr(header, "Columns", 0)
    implied = (rows * cols * int_attr(header, "NumberOfFrames", 1) * int_attr(header, "SamplesPerPixel", 1)
               * max(int_attr(header, "BitsAllocated", 16), 8) // 8)
    if implied <= 0 or implied > MAX_PIXEL_BYTES:
        raise UnrenderableImage("the image attributes of this deflated file are invalid")
    if not complete:
        head, complete = _inflate(path, start, MAX_HEADER_BYTES + implied)
        if not complete:
            raise UnrenderableImage("this deflated file inflates past the size its image attributes imply")
    ds = _parse(head, stop_before_pixels=False)
    ds.file_meta = meta
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian  # what the inflated bytes are
    return ds


def _inflate(path: str, start: int, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` inflated bytes, and whether the stream ended within them."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    try:
        with open(path, "rb") as fp:
            fp.seek(start)
            while chunk := fp.read(256 * 1024):
                while chunk:
                    out += inflater.decompress(chunk, cap + 1 - len(out))
                    if len(out) > cap:
                        return bytes(out[:cap]), False
                    chunk = inflater.unconsumed_tail
                if inflater.eof:
                    break
    except zlib.error:
        raise UnrenderableImage("the deflated data of this file is corrupt") from None
    return bytes(out), True


def _parse(data: bytes, *, stop_before_pixels: bool) -> pydicom.Dataset:
    def at_pixels(tag, vr, length) -> bool:
        return stop_before_pixels and tag in (0x7FE00008, 0x7FE00009, 0x7FE00010)

    try:
        return pydicom.filereader.read_dataset(io.BytesIO(data), False, True, stop_when=at_pixels)
    except Exception:  # noqa: BLE001
        raise UnrenderableImage("the deflated data set of this file is damaged") from None


# (center, width) when the file recommends none.
DEFAULT_WINDOWS = {"CT": (40.0, 400.0)}


def read_frame(path: str, index: int = 0) -> tuple[np.ndarray, pydicom.Dataset]:
    """One frame as float32 modality values, shape (rows, cols) or (rows, cols, 3) for colour.

    Raises UnrenderableImage when the pixels cannot be read (bad attributes, damaged data).
    """
    header = read_stored(path, stop_before_pixels=True)
    frames = int_attr(header, "NumberOfFrames", 1)
    if frames < 1:
        raise UnrenderableImage("NumberOfFrames of this image is not a positive number")
    index = min(max(index, 0), frames - 1)
    _check_size(header, frames)
    try:
        if str(header.file_meta.get("TransferSyntaxUID", "")) == DEFLATED:
            ds = read_stored(path, stop_before_pixels=False)
            arr = ds.pixel_array
            arr = arr[index] if frames > 1 else arr
        else:
            arr = pixel_array(path, index=index if frames > 1 else None)
        if int_attr(header, "SamplesPerPixel", 1) == 1:
            arr = apply_rescale(arr, header).astype(np.float32)
        else:
            arr = arr.astype(np.float32)
    except UnrenderableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder or attribute failure of stored data
        log.warning("rendering: pixels not readable (%s)", type(exc).__name__)
        raise UnrenderableImage("the stored pixel data of this image cannot be decoded") from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise UnrenderableImage("the stored pixel data of this image has an unexpected shape")
    return arr, header


def _check_size(header: pydicom.Dataset, frames: int) -> None:
    rows, cols = int_attr(header, "Rows", 0), int_attr(header, "Columns", 0)
    if rows < 1 or cols < 1:
        raise UnrenderableImage("Rows/Columns of this image are missing or invalid")
    bits = int_attr(header, "BitsAllocated", 16)
    if rows * cols * frames * int_attr(header, "SamplesPerPixel", 1) * max(bits, 8) // 8 > MAX_PIXEL_BYTES:
        raise UnrenderableImage("this image claims more pixel data than the server will decode")


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
            if math.isfinite(float(center)) and math.isfinite(float(width)) and float(width) > 0:
                return float(center), float(width)
    except (TypeError, ValueError, IndexError, OverflowError):
        pass
    modality = str(ds.get("Modality", ""))
    if modality in DEFAULT_WINDOWS:
        return DEFAULT_WINDOWS[modality]
    low, high = np.percentile(values, [1, 99])
    return float((low + high) / 2), float(max(high - low, 1.0))


def to_display(values: np.ndarray, ds: pydicom.Dataset, window: tuple[float, float] | None = None) -> Image.Image:
    """Modality values (or RGB) as an 8-bit PIL image, windowed (the file's window by default)."""
    if values.ndim == 3:  # colour: pixel_array already returns RGB
        return Image.fromarray(np.clip(np.nan_to_num(values), 0, 255).astype(np.uint8), mode="RGB")
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    center, width = window or display_window(ds, values)
    pixels = window_to_uint8(values, center, width)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = 255 - pixels
    return Image.fromarray(pixels, mode="L")


def fit(image: Image.Image, ds: pydicom.Dataset, box: tuple[int, int], resample=Image.BILINEAR) -> Image.Image:
    """Scale ``image`` to fit ``box`` (width, height), keeping the physical aspect from PixelSpacing.

    The box is capped at MAX_RENDERED_SIDE per side, so no request can allocate more than that.
    """
    spacing = float_pair(ds, "PixelSpacing")
    aspect = spacing[0] / spacing[1] if spacing else 1.0  # row spacing / column spacing
    aspect = min(max(aspect, 0.01), 100.0)
    width_px, height_px = image.width, image.height * aspect
    box_w, box_h = min(box[0], MAX_RENDERED_SIDE), min(box[1], MAX_RENDERED_SIDE)
    scale = min(box_w / width_px, box_h / height_px)
    size = (min(box_w, max(1, round(width_px * scale))), min(box_h, max(1, round(height_px * scale))))
    return image.resize(size, resample)


def thumbnail_png(path: str, *, size: int = 192, frame: int | None = None) -> bytes:
    """A PNG thumbnail (longest side ``size`` px, aspect from PixelSpacing) of one frame.

    Raises UnrenderableImage when the stored image cannot be shown.
    """
    header = read_stored(path, stop_before_pixels=True)
    frames = max(int_attr(header, "NumberOfFrames", 1), 1)
    values, ds = read_frame(path, frames // 2 if frame is None else frame)
    image = fit(to_display(values, ds), ds, (size, size), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def placeholder_png(size: int = 192) -> bytes:
    """A plain dark square shown where a thumbnail cannot be rendered."""
    out = io.BytesIO()
    Image.new("L", (size, size), PLACEHOLDER_GREY).save(out, format="PNG")
    return out.getvalue()
