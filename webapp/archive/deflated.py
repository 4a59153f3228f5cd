"""Deflated Explicit VR Little Endian files, inflated without trusting them.

A deflated data set can be a decompression bomb (a 1 MB file that inflates to gigabytes). It is
inflated streamed, with hard caps: first only up to its pixel data element (at most
ARCHIVE_MAX_HEADER_BYTES) to read the image attributes, then the whole data set up to the size
those attributes imply. The result is written as Explicit VR Little Endian, which every reader
serves, and then validated like any other file by ``dicomfile.parse_dicom``.
"""
from __future__ import annotations

import io
import mmap
import struct
import zlib
from typing import BinaryIO

import pydicom
from pydicom.filebase import DicomFileLike

from . import dicomwalk
from .dicomerrors import OUT_OF_RESOURCES, InvalidDicom
from .dicomfile import (DEFLATED_SYNTAXES, check_preamble, file_buffer, image_module, implied_pixel_bytes, limit,
                        read_transfer_syntax, walk_limits)

INFLATE_CHUNK = 256 * 1024
TRAILER_ALLOWANCE = 64 * 1024  # elements after the pixel data (padding, signatures)


def is_deflated(fp: BinaryIO, size: int) -> bool:
    """True when ``fp`` is a DICOM file whose file meta names the deflated transfer syntax."""
    try:
        check_preamble(fp)
        buf = file_buffer(fp, size)
        try:
            ts, _ = read_transfer_syntax(buf, size)
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
    except InvalidDicom:
        return False
    return ts in DEFLATED_SYNTAXES


def inflate_deflated(src: BinaryIO, size: int, out: BinaryIO) -> int:
    """Write ``src`` (Deflated Explicit VR Little Endian) to ``out`` as Explicit VR Little Endian
    with a zeroed preamble; return the bytes written.

    Inflation is streamed with hard caps, so a small file cannot inflate into a large one: first
    at most ARCHIVE_MAX_HEADER_BYTES to read the image attributes, then the whole data set up to
    the size those attributes imply (plus the pad byte and a small allowance for trailing
    elements). Everything else is checked afterwards by ``parse_dicom`` on the result.
    """
    check_preamble(src)
    buf = file_buffer(src, size)
    try:
        _, start = read_transfer_syntax(buf, size)
        src.seek(0)
        meta = pydicom.filereader._read_file_meta_info(_skip_preamble(src))
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()
    head, pixel_at = _inflate_header(src, start, size, limit("ARCHIVE_MAX_HEADER_BYTES", 16 * 2**20))
    if pixel_at is None:
        cap = len(head)  # no pixel data: parse_dicom will say so
    else:
        ds = pydicom.filereader.read_dataset(io.BytesIO(head[:pixel_at]), False, True)
        tag = struct.unpack_from("<HH", head, pixel_at)
        image = image_module(ds, (tag[0] << 16) | tag[1], str(ds.get("SOPClassUID", "")))
        implied = implied_pixel_bytes(ds, image, (tag[0] << 16) | tag[1])
        cap = pixel_at + 12 + implied + 1 + TRAILER_ALLOWANCE
        if implied > limit("ARCHIVE_MAX_DECODED_BYTES", 1024 ** 3):
            raise InvalidDicom(f"image attributes imply {implied // 2**20} MB of pixel data, more than the limit",
                               OUT_OF_RESOURCES)
    del head
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out.seek(0)
    out.truncate()
    out.write(b"\x00" * 128 + b"DICM")
    write_meta = DicomFileLike(out)
    write_meta.is_little_endian, write_meta.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(write_meta, meta, enforce_standard=True)
    written = out.tell()
    return written + _inflate(src, start, size, cap=cap, out=out)


def _skip_preamble(fp: BinaryIO) -> BinaryIO:
    fp.seek(132)
    return fp


def _inflate_header(src: BinaryIO, start: int, size: int, header_cap: int) -> tuple[bytes, int | None]:
    """Inflate just enough of the data set to reach its pixel data element (in doubling steps, at
    most ``header_cap`` bytes): (the inflated bytes, the element's offset in them or None)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    src.seek(start)
    remaining, pending, head, target = size - start, b"", bytearray(), 64 * 1024
    try:
        while True:
            while len(head) < target and not inflater.eof:
                if not pending:
                    if remaining <= 0:
                        break
                    pending = src.read(min(INFLATE_CHUNK, remaining))
                    remaining -= len(pending)
                head += inflater.decompress(pending, target - len(head))
                pending = inflater.unconsumed_tail
            ended = inflater.eof or (remaining <= 0 and not pending)
            try:
                pixel_at = dicomwalk.find_pixel_element(head, len(head), **walk_limits())
                if pixel_at is not None or ended:
                    return bytes(head), pixel_at
            except dicomwalk.Truncated:
                if ended:
                    raise InvalidDicom("deflated data set is truncated before its pixel data") from None
            if target >= header_cap:
                raise InvalidDicom(
                    f"deflated data set's header is larger than the limit of {header_cap // 2**20} MB",
                    OUT_OF_RESOURCES,
                )
            target = min(2 * target, header_cap)
    except zlib.error as exc:
        raise InvalidDicom(f"corrupt deflated data set: {exc}") from None


def _inflate(src: BinaryIO, start: int, size: int, *, cap: int, out: BinaryIO) -> int:
    """Inflate the raw-deflate stream from ``start`` into ``out``, streamed; return the byte count.
    Refuses (and stops) as soon as more than ``cap`` bytes come out."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    src.seek(start)
    remaining = size - start
    pending = b""
    try:
        while not inflater.eof:
            if not pending:
                if remaining <= 0:
                    break
                pending = src.read(min(INFLATE_CHUNK, remaining))
                remaining -= len(pending)
            chunk = inflater.decompress(pending, min(INFLATE_CHUNK, cap + 1 - total))
            pending = inflater.unconsumed_tail
            total += len(chunk)
            if total > cap:
                raise InvalidDicom(
                    f"deflated data set inflates past the {cap} bytes its image attributes imply "
                    "(decompression bomb?)", OUT_OF_RESOURCES,
                )
            out.write(chunk)
    except zlib.error as exc:
        raise InvalidDicom(f"corrupt deflated data set: {exc}") from None
    if not inflater.eof:
        raise InvalidDicom("deflated data set is truncated (the deflate stream does not end)")
    trailing = inflater.unused_data + pending + (src.read(min(remaining, 2)) if remaining > 0 else b"")
    # PS3.5 A.5: an odd-length deflate stream is padded with one 0x00 byte (pydicom and dcmtk write it).
    if trailing and trailing != b"\x00":
        raise InvalidDicom("bytes trail after the deflated data set")
    return total
