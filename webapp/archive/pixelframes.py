"""Check encapsulated pixel data frame by frame, from headers only (nothing is decoded here).

For every frame, not only the first: the basic offset table against the fragments, RLE segment
headers against BitsAllocated × SamplesPerPixel, and the dimensions a JPEG (SOF) or JPEG 2000
(SIZ) codestream declares against Rows, Columns, SamplesPerPixel and BitsAllocated. A codestream
that claims a bigger image than the data set is refused before any decoder runs, so a small file
cannot decode into a large one.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import pydicom.uid as tsuid

from .dicomerrors import InvalidDicom

RLE = {tsuid.RLELossless}
JPEG_FAMILY = {tsuid.JPEGBaseline8Bit, tsuid.JPEGExtended12Bit, tsuid.JPEGLossless, tsuid.JPEGLosslessSV1,
               tsuid.JPEGLSLossless, tsuid.JPEGLSNearLossless}
J2K_FAMILY = {tsuid.JPEG2000Lossless, tsuid.JPEG2000, tsuid.HTJ2KLossless, tsuid.HTJ2KLosslessRPCL, tsuid.HTJ2K}
HEADER_SCAN_BYTES = 64 * 1024  # a codestream's image header lies within its first bytes


@dataclass(frozen=True)
class Image:
    """What the data set's Image Pixel module declares."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int


def frame_fragments(buf, fragments: list[tuple[int, int]], image: Image) -> list[tuple[int, int]]:
    """The first fragment (offset, length) of each frame, after checking the offset table.

    ``fragments[0]`` is the basic offset table item; the rest hold the frames.
    """
    if not fragments:
        raise InvalidDicom("encapsulated pixel data has no basic offset table item")
    (bot_offset, bot_length), data = fragments[0], fragments[1:]
    if not data:
        raise InvalidDicom("encapsulated pixel data holds no frames (no fragment after the offset table)")
    if bot_length % 4:
        raise InvalidDicom(f"basic offset table is {bot_length} bytes, not a multiple of 4")
    starts, position = {}, 0  # fragment start, relative to the first fragment's item tag
    for index, (_, length) in enumerate(data):
        starts[position] = index
        position += 8 + length
    if bot_length:
        offsets = struct.unpack_from(f"<{bot_length // 4}L", buf, bot_offset)
        if len(offsets) != image.frames:
            raise InvalidDicom(
                f"basic offset table lists {len(offsets)} frames but NumberOfFrames is {image.frames}"
            )
        for frame, offset in enumerate(offsets):
            if offset >= position:
                raise InvalidDicom(
                    f"basic offset table: frame {frame + 1} starts at {offset}, past the end of the "
                    f"{position} bytes of fragments"
                )
            if offset not in starts or (frame and offset <= offsets[frame - 1]):
                raise InvalidDicom(f"basic offset table: frame {frame + 1} offset {offset} is not a fragment start")
        return [data[starts[o]] for o in offsets]
    if len(data) < image.frames:
        raise InvalidDicom(f"encapsulated pixel data holds {len(data)} fragment(s) for {image.frames} frames")
    if image.frames > 1 and len(data) != image.frames:
        raise InvalidDicom(
            f"encapsulated pixel data holds {len(data)} fragments for {image.frames} frames and no "
            "basic offset table to tell the frames apart"
        )
    return data if image.frames > 1 else data[:1]


def check_frames(buf, fragments: list[tuple[int, int]], ts, image: Image) -> None:
    """Check the framing and every frame's header; raise InvalidDicom with the first problem."""
    frames = frame_fragments(buf, fragments, image)
    if ts in RLE:
        if len(fragments) - 1 != image.frames:
            raise InvalidDicom(
                f"RLE pixel data holds {len(fragments) - 1} fragments for {image.frames} frames "
                "(RLE puts each frame in exactly one fragment)"
            )
        check = _check_rle
    elif ts in JPEG_FAMILY:
        check = _check_jpeg
    elif ts in J2K_FAMILY:
        check = _check_j2k
    else:
        return
    for number, (offset, length) in enumerate(frames, start=1):
        check(buf, offset, length, image, number)


def _check_rle(buf, offset: int, length: int, image: Image, number: int) -> None:
    if length < 64:
        raise InvalidDicom(f"RLE frame {number}: {length} bytes, shorter than the 64-byte RLE header")
    header = struct.unpack_from("<16L", buf, offset)
    expected = image.samples * ((image.bits_allocated + 7) // 8)
    segments = header[0]
    if segments != expected:
        raise InvalidDicom(
            f"RLE frame {number} has {segments} segments but SamplesPerPixel × BitsAllocated/8 needs {expected}"
        )
    starts = header[1:1 + segments]
    if starts[0] != 64 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= length:
        raise InvalidDicom(f"RLE frame {number}: segment offsets {list(starts)} are not inside the frame")
    if any(header[1 + segments:]):
        raise InvalidDicom(f"RLE frame {number}: offsets given for more segments than declared")


def _check_jpeg(buf, offset: int, length: int, image: Image, number: int) -> None:
    end = offset + min(length, HEADER_SCAN_BYTES)
    if bytes(buf[offset:offset + 2]) != b"\xff\xd8":
        raise InvalidDicom(f"JPEG frame {number} does not start with a JPEG SOI marker")
    pos = offset + 2
    while pos + 4 <= end:
        if buf[pos] != 0xFF:
            raise InvalidDicom(f"JPEG frame {number}: corrupt marker segment at byte {pos - offset}")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (seg_length,) = struct.unpack_from(">H", buf, pos + 2)
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:  # SOFn / SOF55
            if pos + 10 > end:
                break
            precision, height, width, components = struct.unpack_from(">BHHB", buf, pos + 4)
            _compare(f"JPEG frame {number}", width, height, components, precision, image)
            return
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            break
        pos += 2 + seg_length
    raise InvalidDicom(f"JPEG frame {number} has no frame header (SOF marker)")


def _check_j2k(buf, offset: int, length: int, image: Image, number: int) -> None:
    head = bytes(buf[offset:offset + min(length, HEADER_SCAN_BYTES)])
    start = head.find(b"\xff\x4f\xff\x51")  # SOC then SIZ: a raw codestream, or inside a JP2 'jp2c' box
    if start < 0 or start + 4 + 38 + 3 > len(head):
        raise InvalidDicom(f"JPEG 2000 frame {number} has no codestream header (SOC/SIZ markers)")
    siz = start + 4
    _, _, xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">HHLLLL", head, siz)
    (components,) = struct.unpack_from(">H", head, siz + 36)
    if components < 1 or siz + 38 + 3 * components > len(head):
        raise InvalidDicom(f"JPEG 2000 frame {number}: corrupt SIZ marker ({components} components)")
    precision = max((head[siz + 38 + 3 * c] & 0x7F) + 1 for c in range(components))
    _compare(f"JPEG 2000 frame {number}", xsiz - xosiz, ysiz - yosiz, components, precision, image)


def _compare(what: str, width: int, height: int, components: int, precision: int, image: Image) -> None:
    if (width, height) != (image.columns, image.rows):
        raise InvalidDicom(
            f"{what} declares {width}×{height} pixels but Columns×Rows is {image.columns}×{image.rows} "
            "(refused before decoding)"
        )
    if components != image.samples:
        raise InvalidDicom(f"{what} has {components} component(s) but SamplesPerPixel is {image.samples}")
    if precision > image.bits_allocated:
        raise InvalidDicom(f"{what} has {precision}-bit samples but BitsAllocated is {image.bits_allocated}")
