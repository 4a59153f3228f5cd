"""WADO-RS retrieval: frames with one seek, whole instances streamed, bulk data, negotiation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pydicom
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array

from webapp.archive.models import Instance
from webapp.archive.storage import archive_storage

from .errors import bad_request, not_acceptable
from .media import EXPLICIT_LE, MEDIA_TYPE_OF_SYNTAX, NATIVE_LE, MediaRange

BIG_ENDIAN = "1.2.840.10008.1.2.2"
CHUNK = 256 * 1024


def parse_frame_list(text: str, number_of_frames: int) -> list[int]:
    """'1,3,5' -> [1, 3, 5]; 400 for anything else or a frame outside 1..number_of_frames."""
    frames = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise bad_request(f"frame numbers are whole numbers from 1, not {part!r}")
        number = int(part)
        if not 1 <= number <= number_of_frames:
            raise bad_request(f"frame {number} does not exist: this instance has {number_of_frames} frame(s)")
        frames.append(number)
    return frames


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
    path = archive_storage().path(inst.file_path)
    ts = inst.transfer_syntax_uid
    if plan.transcode or inst.bits_allocated == 1 or inst.pixel_data_offset is None:
        return [_decoded_frame(path, inst, n) for n in frames]
    if ts in NATIVE_LE:
        size = inst.rows * inst.columns * inst.samples_per_pixel * inst.bits_allocated // 8
        out = []
        with open(path, "rb") as f:
            for n in frames:
                f.seek(inst.pixel_data_offset + (n - 1) * size)
                out.append(f.read(size))
        return out
    with open(path, "rb") as f:
        f.seek(inst.pixel_data_offset)
        encapsulated = f.read(inst.pixel_data_length)
    return [get_frame(encapsulated, n - 1, number_of_frames=inst.number_of_frames) for n in frames]


def _decoded_frame(path: str, inst: Instance, number: int) -> bytes:
    arr = pixel_array(path, index=number - 1 if inst.number_of_frames > 1 else None)
    if inst.bits_allocated == 1:
        from pydicom.pixels import pack_bits

        return pack_bits(arr)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def frame_values(inst: Instance, number: int) -> tuple[np.ndarray, pydicom.Dataset]:
    """One frame as float32 modality values (HU for CT), without decoding the whole file."""
    from pydicom.pixels import apply_rescale

    path = archive_storage().path(inst.file_path)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    samples = int(header.get("SamplesPerPixel") or 1)
    if inst.transfer_syntax_uid in NATIVE_LE and inst.bits_allocated in (8, 16, 32) and inst.pixel_data_offset:
        signed = int(header.get("PixelRepresentation") or 0) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{inst.bits_allocated // 8}")
        (raw,) = read_frames(inst, [number], FramePlan("", transcode=False))
        arr = np.frombuffer(raw, dtype=dtype).reshape((inst.rows, inst.columns, samples) if samples > 1 else (inst.rows, inst.columns))
        bits_stored = int(header.get("BitsStored") or inst.bits_allocated)
        if bits_stored < inst.bits_allocated and samples == 1:
            arr = _mask_bits(arr, bits_stored, signed)
    else:
        arr = pixel_array(path, index=number - 1 if inst.number_of_frames > 1 else None)
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
    path = archive_storage().path(inst.file_path)
    if tag == 0x7FE00010 and inst.pixel_data_offset is not None and inst.transfer_syntax_uid in NATIVE_LE:
        with open(path, "rb") as f:
            f.seek(inst.pixel_data_offset)
            return f.read(inst.pixel_data_length)
    ds = pydicom.dcmread(path, specific_tags=[tag])
    if tag not in ds:
        from .errors import DicomWebError

        raise DicomWebError(404, f"this instance has no top-level element {tag:08X}")
    value = ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()
