"""Walk the raw element stream of a DICOM file, without trusting pydicom's leniency.

pydicom reads what it can: it switches between explicit and implicit VR when the file lies about
its transfer syntax, keeps the last of two elements with the same tag, stops quietly at trailing
junk and parses a sequence of any size. The archive needs the opposite, so before pydicom sees a
file this module walks every element header (values are skipped, not read) and raises
``InvalidDicom`` for:

- a data set encoded otherwise than its transfer syntax says (explicit vs implicit VR);
- a tag that appears twice in the top-level data set or in the file meta;
- elements running past the end of the file, undefined lengths where none may be;
- encapsulated pixel data without its sequence delimiter, and bytes after the pixel data that
  are not well-formed elements;
- more than ``max_items`` items in one sequence, ``max_elements`` elements in all, or sequences
  nested deeper than ``max_depth``.

Offsets are byte positions in the file. The walk is linear in the number of elements.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR

from .dicomerrors import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, InvalidDicom

PIXEL_DATA_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
SHORT_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
             b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
ALL_VRS = LONG_VRS | SHORT_VRS


class Truncated(InvalidDicom):
    """The bytes end inside an element."""


@dataclass(frozen=True)
class Encoding:
    explicit: bool
    little: bool


EXPLICIT_LE = Encoding(True, True)
IMPLICIT_LE = Encoding(False, True)


@dataclass
class PixelElement:
    tag: int
    value_offset: int
    length: int  # value bytes; for encapsulated data, from the value start to the end of its delimiter
    encapsulated: bool
    fragments: list[tuple[int, int]] = field(default_factory=list)  # (value offset, length); item 0 is the BOT


@dataclass
class Walk:
    dataset_start: int  # first byte after the file meta
    pixel: PixelElement | None
    top_level_tags: list[int]


def tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walker:
    def __init__(self, buf, size: int, enc: Encoding, *, max_items: int, max_elements: int, max_depth: int):
        self.buf, self.size, self.enc = buf, size, enc
        self.max_items, self.max_elements, self.max_depth = max_items, max_elements, max_depth
        self.elements = 0

    # --- low level ----------------------------------------------------------------------------

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos + n > self.size:
            raise Truncated(f"file is truncated inside {what} at byte {pos}")

    def _u32(self, pos: int, little: bool) -> int:
        return struct.unpack_from("<L" if little else ">L", self.buf, pos)[0]

    def _tag(self, pos: int, little: bool) -> int:
        group, elem = struct.unpack_from("<HH" if little else ">HH", self.buf, pos)
        return (group << 16) | elem

    def header(self, pos: int, enc: Encoding) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, value offset) of the element at ``pos``."""
        self._need(pos, 8, "an element header")
        tag = self._tag(pos, enc.little)
        if (tag >> 16) == 0xFFFE or not enc.explicit:  # items and delimiters have no VR
            return tag, None, self._u32(pos + 4, enc.little), pos + 8
        vr = bytes(self.buf[pos + 4:pos + 6])
        if vr in LONG_VRS:
            self._need(pos, 12, "an element header")
            return tag, vr, self._u32(pos + 8, enc.little), pos + 12
        if vr not in SHORT_VRS:
            raise InvalidDicom(
                f"element {tag_name(tag)} at byte {pos} has no valid VR ({vr!r}): the data set is not "
                "encoded as its transfer syntax says"
            )
        return tag, vr, struct.unpack_from("<H" if enc.little else ">H", self.buf, pos + 6)[0], pos + 8

    def _count(self) -> None:
        self.elements += 1
        if self.elements > self.max_elements:
            raise InvalidDicom(
                f"data set holds more than {self.max_elements} elements (the archive's limit)", OUT_OF_RESOURCES
            )

    # --- data sets and sequences --------------------------------------------------------------

    def dataset(self, pos: int, end: int | None, enc: Encoding, depth: int) -> int:
        """Walk a nested data set from ``pos`` to ``end`` (or to its item delimiter); return the
        position after it."""
        while end is None or pos < end:
            tag, vr, length, value = self.header(pos, enc)
            if tag == ITEM_DELIMITER:
                if end is not None:
                    raise InvalidDicom(f"unexpected item delimiter at byte {pos}")
                return value
            if (tag >> 16) == 0xFFFE:
                raise InvalidDicom(f"unexpected item tag {tag_name(tag)} at byte {pos}")
            self._count()
            pos = self.value(tag, vr, length, value, enc, depth, limit=end)
        if end is not None and pos != end:
            raise InvalidDicom(f"an item's elements run past its declared length at byte {end}")
        return pos

    def value(self, tag: int, vr: bytes | None, length: int, value: int, enc: Encoding, depth: int,
              limit: int | None = None) -> int:
        """Skip (or walk, for sequences) one element's value; return the position after it."""
        is_sequence = vr == b"SQ" or (vr is None and _implicit_vr(tag) == "SQ")
        if length == UNDEFINED:
            if vr == b"UN":  # PS3.5 §6.2.2: an undefined-length UN is an implicit VR LE sequence
                return self.sequence(value, None, IMPLICIT_LE, depth + 1, tag)
            if is_sequence or vr is None:
                return self.sequence(value, None, enc, depth + 1, tag)
            raise InvalidDicom(f"element {tag_name(tag)} has an undefined length but is not a sequence")
        stop = value + length
        if stop > (self.size if limit is None else limit):
            raise Truncated(
                f"file is truncated or corrupt: element {tag_name(tag)} declares {length} bytes but only "
                f"{max(0, (self.size if limit is None else limit) - value)} remain"
            )
        if is_sequence:
            self.sequence(value, stop, enc, depth + 1, tag)
        return stop

    def sequence(self, pos: int, end: int | None, enc: Encoding, depth: int, tag: int) -> int:
        if depth > self.max_depth:
            raise InvalidDicom(f"sequences nested deeper than {self.max_depth} levels", OUT_OF_RESOURCES)
        items = 0
        while end is None or pos < end:
            item_tag, _, length, value = self.header(pos, Encoding(False, enc.little))
            if item_tag == SEQUENCE_DELIMITER:
                if end is not None:
                    raise InvalidDicom(f"unexpected sequence delimiter in {tag_name(tag)} at byte {pos}")
                return value
            if item_tag != ITEM:
                raise InvalidDicom(f"sequence {tag_name(tag)} holds {tag_name(item_tag)} where an item belongs")
            items += 1
            if items > self.max_items:
                raise InvalidDicom(
                    f"sequence {tag_name(tag)} holds more than {self.max_items} items (the archive's limit)",
                    OUT_OF_RESOURCES,
                )
            if length == UNDEFINED:
                pos = self.dataset(value, None, enc, depth)
            else:
                if value + length > (self.size if end is None else end):
                    raise Truncated(f"file is truncated or corrupt: an item of {tag_name(tag)} runs past its sequence")
                pos = self.dataset(value, value + length, enc, depth)
        if end is not None and pos != end:
            raise InvalidDicom(f"sequence {tag_name(tag)} runs past its declared length")
        return pos

    def fragments(self, pos: int, tag: int) -> tuple[int, list[tuple[int, int]]]:
        """Items of encapsulated pixel data up to the sequence delimiter: (end, [(offset, length)])."""
        out = []
        while True:
            if pos + 8 > self.size:
                raise Truncated(
                    "encapsulated pixel data has no sequence delimiter: the file ends after "
                    f"{len(out)} item(s) (truncated?)"
                )
            item_tag = self._tag(pos, True)
            length = self._u32(pos + 4, True)
            if item_tag == SEQUENCE_DELIMITER:
                return pos + 8, out
            if item_tag != ITEM:
                raise InvalidDicom(
                    f"encapsulated pixel data holds {tag_name(item_tag)} at byte {pos} where a fragment "
                    "item or the sequence delimiter belongs"
                )
            if length == UNDEFINED or pos + 8 + length > self.size:
                raise Truncated(f"file is truncated: pixel data fragment {len(out)} runs past the end of the file")
            out.append((pos + 8, length))
            if len(out) > self.max_items:
                raise InvalidDicom(f"pixel data holds more than {self.max_items} fragments", OUT_OF_RESOURCES)
            pos += 8 + length


def _implicit_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def read_meta(buf, size: int) -> tuple[int, dict[int, bytes]]:
    """Walk the file meta (group 0002, always explicit VR little endian) from byte 132; return the
    offset of the data set and the meta values by tag. A tag that appears twice is refused."""
    walker = _Walker(buf, size, EXPLICIT_LE, max_items=0, max_elements=1000, max_depth=0)
    pos, values = 132, {}
    while pos + 8 <= size and walker._tag(pos, True) >> 16 == 0x0002:
        tag, vr, length, value = walker.header(pos, EXPLICIT_LE)
        if tag in values:
            raise InvalidDicom(f"duplicated element {tag_name(tag)} in the file meta information")
        if length == UNDEFINED or value + length > size:
            raise InvalidDicom(f"file meta element {tag_name(tag)} runs past the end of the file")
        values[tag] = bytes(buf[value:value + length]) if length <= 1024 else b""
        pos = value + length
    return pos, values


def find_pixel_element(buf, size: int, enc: Encoding = EXPLICIT_LE, *, max_items: int, max_elements: int,
                       max_depth: int) -> int | None:
    """Offset of the top-level pixel data element in ``buf`` (a data set without file meta), or
    None when the data set ends without one. Raises Truncated when ``buf`` ends inside an element."""
    walker = _Walker(buf, size, enc, max_items=max_items, max_elements=max_elements, max_depth=max_depth)
    pos = 0
    while pos < size:
        tag, vr, length, value = walker.header(pos, enc)
        if tag in PIXEL_DATA_TAGS:
            return pos
        pos = walker.value(tag, vr, length, value, enc, 0)
    return None


def check_encoding(buf, size: int, pos: int, enc: Encoding, ts_name: str) -> None:
    """Refuse a data set whose first element is encoded otherwise than the transfer syntax says
    (pydicom would silently switch): explicit vs implicit VR, and byte order."""
    if pos + 8 > size:
        return
    vr = bytes(buf[pos + 4:pos + 6])
    group_le, elem_le = struct.unpack_from("<HH", buf, pos)
    group_be = struct.unpack_from(">H", buf, pos)[0]
    if enc.little and group_le >= 0x0100 > group_be:
        raise InvalidDicom(f"data set encoded big endian, but the transfer syntax is {ts_name} (little endian)")
    if not enc.little and group_be >= 0x0100 > group_le:
        raise InvalidDicom(f"data set encoded little endian, but the transfer syntax is {ts_name} (big endian)")
    group = group_le if enc.little else group_be
    tag = (group << 16) | (elem_le if enc.little else struct.unpack_from(">H", buf, pos + 2)[0])
    looks_explicit = vr in ALL_VRS and (_implicit_vr(tag) in (None, vr.decode()) or vr == b"UN")
    if enc.explicit and vr not in ALL_VRS:
        raise InvalidDicom(f"data set encoded with implicit VR, but the transfer syntax is {ts_name} (explicit VR)")
    if not enc.explicit and looks_explicit:
        raise InvalidDicom(f"data set encoded with explicit VR, but the transfer syntax is {ts_name} (implicit VR)")
    if group < 0x0008 or group == 0xFFFE:
        raise InvalidDicom(
            f"the data set's first element {tag_name(tag)} is not a data element: the byte order or "
            f"encoding does not match the transfer syntax {ts_name}"
        )


def walk(buf, size: int, start: int, enc: Encoding, *, max_items: int, max_elements: int, max_depth: int) -> Walk:
    """Walk the top-level data set from ``start`` to the end of the file."""
    walker = _Walker(buf, size, enc, max_items=max_items, max_elements=max_elements, max_depth=max_depth)
    pos, seen, tags, pixel = start, set(), [], None
    while pos < size and pixel is None:
        tag, vr, length, value = walker.header(pos, enc)
        if (tag >> 16) == 0xFFFE:
            raise InvalidDicom(f"unexpected {tag_name(tag)} at byte {pos} in the top-level data set")
        if tag in seen:
            raise InvalidDicom(f"duplicated element {tag_name(tag)} in the data set")
        seen.add(tag)
        tags.append(tag)
        walker._count()
        if tag in PIXEL_DATA_TAGS and length == UNDEFINED:
            end, fragments = walker.fragments(value, tag)
            pixel = PixelElement(tag, value, end - value, True, fragments)
            pos = end
            continue
        if tag in PIXEL_DATA_TAGS:
            pixel = PixelElement(tag, value, length, False)
        pos = walker.value(tag, vr, length, value, enc, 0)
    if pos < size:
        _walk_trailer(walker, pos, size, enc, tags)
    return Walk(start, pixel, tags)


def _walk_trailer(walker: _Walker, pos: int, size: int, enc: Encoding, tags: list[int]) -> None:
    """After the pixel data only well-formed elements with higher tags may follow (e.g. padding,
    signatures); anything else is trailing bytes (a polyglot, a second file, junk)."""
    trailing = size - pos
    try:
        while pos < size:
            if size - pos < 8:
                raise InvalidDicom("short")
            tag, vr, length, value = walker.header(pos, enc)
            if tag <= tags[-1] or (tag >> 16) == 0xFFFE:
                raise InvalidDicom("out of order")
            tags.append(tag)
            walker._count()
            pos = walker.value(tag, vr, length, value, enc, 0)
    except InvalidDicom as exc:
        if exc.code != CANNOT_UNDERSTAND:
            raise
        raise InvalidDicom(f"{trailing} bytes trail after the pixel data and are not data elements") from None


