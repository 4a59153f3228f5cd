"""WADO-RS retrieval: frames with one seek, whole instances streamed, bulk data, negotiation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import logging

import numpy as np
import pydicom
from django.conf import settings
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array

from webapp.archive.models import Instance
from webapp.archive.rendering import DEFLATED, UnrenderableImage, int_attr, read_stored
from webapp.archive.storage import archive_storage

from .errors import DicomWebError, bad_request, not_acceptable

log = logging.getLogger(__name__)
MAX_FRAME_BYTES = 256 * 2**20  # the most pixel bytes one frames response may hold (1000 frames of 256x256x2)
from .media import EXPLICIT_LE, MEDIA_TYPE_OF_SYNTAX, NATIVE_LE, MediaRange

BIG_ENDIAN = "1.2.840.10008.1.2.2"
CHUNK = 256 * 1024


def max_frames() -> int:
    return getattr(settings, "DICOMWEB_MAX_FRAMES_PER_REQUEST", 1000)


def parse_frame_list(text: str, number_of_frames: int) -> list[int]:
    """'1,3,5' -> [1, 3, 5].

    400 for anything that is not a list of distinct whole numbers from 1 (or longer than
    DICOMWEB_MAX_FRAMES_PER_REQUEST); 404 for a frame this instance does not have.
    """
    cap = max_frames()
    if text.count(",") >= cap:
        raise bad_request(f"at most {cap} frames per request; ask for the rest in further requests")
    frames: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or len(part) > 9:
            raise bad_request(f"frame numbers are whole numbers from 1, not {part[:20]!r}")
        frames.append(int(part))
    if len(set(frames)) != len(frames):
        raise bad_request("each frame may be asked for once per request (the frame list has duplicates)")
    for number in frames:
        if number == 0:
            raise bad_request("frame 0 does not exist: frame numbers start at 1")
        if number > number_of_frames:
            raise DicomWebError(404, f"frame {number} does not exist: this instance has {number_of_frames} frame(s)")
    return frames


class UnreadablePixels(DicomWebError):
    """The stored pixel data of an instance cannot be served (422, with the reason)."""

    def __init__(self, reason: str):
        super().__init__(422, f"the stored pixel data of this instance cannot be read: {reason}")


@dataclass(frozen=True)
class FramePlan:
    content_type: str  # the part's Content-Type header value
    transcode: bool  # decode to explicit VR little endian instead of sending the stored bytes


def plan_frames(ranges: list[MediaRange], stored_ts: str) -> FramePlan:
    """Pick the first acceptable representation in the client's order; 406 if none."""
    compressed = stored_ts not in NATIVE_LE and stored_ts != BIG_ENDIAN
    as_stored_type = MEDIA_TYPE_OF_SYNTAX.get(stored_ts, "application/octet-stream") if compressed else "application/octet-stream"
    as_stored = FramePlan(f"{as_stored_type}; transfer-syntax={stored_ts if compressed else EXPLICIT_LE}",
                          transcode=stored_ts == BIG_ENDIAN)
    uncompressed = FramePlan(f"application/octet-stream; transfer-syntax={EXPLICIT_LE}", transcode=compressed or stored_ts == BIG_ENDIAN)
    for r in ranges:
        if r.mime == "*/*" or (r.mime == "multipart/related" and r.part_type in (None, "*/*")):
            return as_stored if r.mime == "multipart/related" and compressed else uncompressed
        if r.mime != "multipart/related":
            continue
        ts = r.transfer_syntax
        if r.part_type == "application/octet-stream":
            if ts == "*":
                return FramePlan(f"application/octet-stream; transfer-syntax={stored_ts if compressed else EXPLICIT_LE}",
                                 transcode=stored_ts == BIG_ENDIAN)
            if ts in (None, EXPLICIT_LE):
                return uncompressed
            if ts == stored_ts:
                return as_stored
        elif compressed and r.part_type == as_stored_type and ts in (None, "*", stored_ts):
            return as_stored
    raise not_acceptable(
        f"cannot send these frames as {', '.join(r.mime + ''.join(f'; {k}={v}' for k, v in r.params.items()) for r in ranges)}; "
        f"stored as {stored_ts}; available: application/octet-stream (explicit VR little endian)"
        + (f" or {as_stored_type} as stored" if compressed else "")
    )


def read_frames(inst: Instance, frames: list[int], plan: FramePlan) -> list[bytes]:
    """The frames' bytes; UnreadablePixels (422) when the stored data cannot give them."""
    try:
        return _read_frames(inst, frames, plan)
    except DicomWebError:
        raise
    except UnrenderableImage as exc:
        raise UnreadablePixels(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - stored data is untrusted: never a 500
        log.warning("wado: instance %s: frames not readable (%s)", inst.pk, type(exc).__name__)
        raise UnreadablePixels("the file's pixel data or image attributes are damaged") from None


def _frame_size(inst: Instance) -> int:
    return inst.rows * inst.columns * inst.samples_per_pixel * inst.bits_allocated // 8


def _read_frames(inst: Instance, frames: list[int], plan: FramePlan) -> list[bytes]:
    if _frame_size(inst) * len(frames) > MAX_FRAME_BYTES:
        raise bad_request("these frames together are too large for one response; ask for fewer")
    path = archive_storage().path(inst.file_path)
    ts = inst.transfer_syntax_uid
    if plan.transcode or inst.bits_allocated == 1 or inst.pixel_data_offset is None or ts == DEFLATED:
        return [_decoded_frame(path, inst, n) for n in frames]
    if ts in NATIVE_LE:
        size = _frame_size(inst)
        out = []
        with open(path, "rb") as f:
            for n in frames:
                f.seek(inst.pixel_data_offset + (n - 1) * size)
                data = f.read(size)
                if len(data) != size:
                    raise UnrenderableImage(f"frame {n} is cut short in the stored file")
                out.append(data)
        return out
    if not inst.pixel_data_length or inst.pixel_data_length > inst.file_size:
        raise UnrenderableImage("the stored pixel data length is invalid")
    with open(path, "rb") as f:
        f.seek(inst.pixel_data_offset)
        encapsulated = f.read(inst.pixel_data_length)
    return [get_frame(encapsulated, n - 1, number_of_frames=inst.number_of_frames) for n in frames]


def _decoded_frame(path: str, inst: Instance, number: int) -> bytes:
    index = number - 1 if inst.number_of_frames > 1 else None
    if inst.transfer_syntax_uid == DEFLATED:
        arr = read_stored(path, stop_before_pixels=False).pixel_array  # inflated with a hard cap
        arr = arr[index] if index is not None else arr
    else:
        arr = pixel_array(path, index=index)
    if inst.bits_allocated == 1:
        from pydicom.pixels import pack_bits

        return pack_bits(arr)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def frame_values(inst: Instance, number: int) -> tuple[np.ndarray, pydicom.Dataset]:
    """One frame as float32 modality values (HU for CT), without decoding the whole file.

    UnreadablePixels (422) when the stored data cannot give it.
    """
    try:
        return _frame_values(inst, number)
    except DicomWebError:
        raise
    except UnrenderableImage as exc:
        raise UnreadablePixels(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - stored data is untrusted: never a 500
        log.warning("wado: instance %s: frame %s not readable (%s)", inst.pk, number, type(exc).__name__)
        raise UnreadablePixels("the file's pixel data or image attributes are damaged") from None


def _frame_values(inst: Instance, number: int) -> tuple[np.ndarray, pydicom.Dataset]:
    from pydicom.pixels import apply_rescale

    path = archive_storage().path(inst.file_path)
    header = read_stored(path, stop_before_pixels=True)
    samples = int_attr(header, "SamplesPerPixel", 1)
    if inst.transfer_syntax_uid in NATIVE_LE and inst.bits_allocated in (8, 16, 32) and inst.pixel_data_offset:
        signed = int_attr(header, "PixelRepresentation", 0) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{inst.bits_allocated // 8}")
        (raw,) = _read_frames(inst, [number], FramePlan("", transcode=False))
        shape = (inst.rows, inst.columns, samples) if samples > 1 else (inst.rows, inst.columns)
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        bits_stored = int_attr(header, "BitsStored", inst.bits_allocated)
        if 0 < bits_stored < inst.bits_allocated and samples == 1:
            arr = _mask_bits(arr, bits_stored, signed)
    else:
        from webapp.archive.rendering import read_frame

        return read_frame(path, number - 1)  # decoded, rescaled to modality values
    if samples == 1:
        arr = apply_rescale(arr, header)
    return arr.astype(np.float32), header


def _mask_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    values = arr.astype(np.int64) & ((1 << bits_stored) - 1)
    if signed:
        values = np.where(values >= 1 << (bits_stored - 1), values - (1 << bits_stored), values)
    return values


def check_dicom_accept(ranges: list[MediaRange], stored: set[str]) -> None:
    """Whole instances are sent as stored (no transcoding); 406 when the client rules that out."""
    for r in ranges:
        if r.mime in ("*/*", "application/dicom"):
            return
        if r.mime == "multipart/related" and r.part_type in (None, "*/*", "application/dicom"):
            ts = r.transfer_syntax
            if ts in (None, "*") or stored <= {ts}:
                return
    raise not_acceptable(
        'instances are available as multipart/related; type="application/dicom" in their stored '
        f"transfer syntax ({', '.join(sorted(stored))}); use transfer-syntax=* or omit it"
    )


def file_chunks(inst: Instance) -> Iterator[bytes]:
    with archive_storage().open(inst.file_path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def bulk_value(inst: Instance, tag: int) -> bytes:
    """The raw value of a top-level element (pixel data as stored: native bytes or encapsulated)."""
    try:
        return _bulk_value(inst, tag)
    except DicomWebError:
        raise
    except Exception as exc:  # noqa: BLE001 - stored data is untrusted: never a 500
        log.warning("wado: instance %s: bulk data %08X not readable (%s)", inst.pk, tag, type(exc).__name__)
        raise DicomWebError(422, "this element of the stored file cannot be read") from None


def _bulk_value(inst: Instance, tag: int) -> bytes:
    path = archive_storage().path(inst.file_path)
    if inst.transfer_syntax_uid == DEFLATED:
        ds = read_stored(path, stop_before_pixels=False)
        if tag not in ds:
            raise DicomWebError(404, f"this instance has no top-level element {tag:08X}")
        value = ds[tag].value
        return value if isinstance(value, bytes) else str(value).encode()
    if tag == 0x7FE00010 and inst.pixel_data_offset is not None and inst.transfer_syntax_uid in NATIVE_LE:
        with open(path, "rb") as f:
            f.seek(inst.pixel_data_offset)
            return f.read(inst.pixel_data_length)
    ds = pydicom.dcmread(path, specific_tags=[tag])
    if tag not in ds:
        raise DicomWebError(404, f"this instance has no top-level element {tag:08X}")
    value = ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()
