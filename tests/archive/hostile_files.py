"""Hostile DICOM files and zips, made here with pydicom (and Pillow / openjpeg for codestreams).

Each case is (id, bytes builder, the words the refusal must contain). Every reason is worded so
that its first 64 characters (all that STOW-RS's ErrorComment carries) already say what is wrong.
"""
from __future__ import annotations

import io
import struct
import zipfile
from typing import Callable

import numpy as np
import openjpeg
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian,
                         JPEG2000Lossless, JPEGBaseline8Bit, RLELossless)

from tests.factories import ct_slice, to_bytes, uid

Case = tuple[str, Callable[[], bytes], str]
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def base(**extra):
    """A valid 16×16 16-bit CT slice of its own study (one per case, so no case meets another)."""
    return ct_slice(study="hostile", series="hostile-ct", rows=16, columns=16, **extra)


def with_attrs(**attrs) -> Callable[[], bytes]:
    def build():
        ds = base()
        for keyword, value in attrs.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return to_bytes(ds)
    return build


def pixels(n: int) -> Callable[[], bytes]:
    def build():
        ds = base()
        ds.PixelData = bytes(n)
        return to_bytes(ds)
    return build


def raw_with(ds, ts, meta_changes: dict | None = None) -> bytes:
    """Write ``ds`` with the transfer syntax ``ts`` (no checks of what the meta says)."""
    ds.file_meta.TransferSyntaxUID = ts
    for keyword, value in (meta_changes or {}).items():
        setattr(ds.file_meta, keyword, value)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def multiframe(frames: int, **extra):
    """A 16×16 16-bit image with ``frames`` frames (native)."""
    ds = base(**extra)
    ds.NumberOfFrames = frames
    ds.PixelData = np.arange(16 * 16 * frames, dtype=np.uint16).tobytes()
    return ds


def rle_frames(frames: int) -> list[bytes]:
    ds = multiframe(frames)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=frames))


def encapsulated_file(frame_bytes: list[bytes], ts, *, frames: int | None = None, bot: bool = True,
                      pixel_value: bytes | None = None, **extra) -> bytes:
    """A data set whose pixel data is ``frame_bytes`` encapsulated (with a basic offset table)."""
    ds = base(**extra)
    ds.NumberOfFrames = frames if frames is not None else len(frame_bytes)
    ds.PixelData = pixel_value if pixel_value is not None else encapsulate(frame_bytes, has_bot=bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def rle_file(**kw) -> bytes:
    return encapsulated_file(rle_frames(3), RLELossless, **kw)


def rle_bad_segments_in_frame_3() -> bytes:
    frames = rle_frames(3)
    frames[2] = struct.pack("<L", 1) + frames[2][4:]  # frame 3's header claims 1 segment, 16-bit needs 2
    return encapsulated_file(frames, RLELossless)


def rle_offsets_outside_frame_2() -> bytes:
    frames = rle_frames(3)
    header = list(struct.unpack_from("<16L", frames[1]))
    header[2] = len(frames[1]) + 1000
    frames[1] = struct.pack("<16L", *header) + frames[1][64:]
    return encapsulated_file(frames, RLELossless)


def bot_offset_past_the_end() -> bytes:
    frames = rle_frames(3)
    lengths = [len(f) + (len(f) % 2) for f in frames]
    offsets = [0, 8 + lengths[0], 10**6]
    table = b"".join(struct.pack("<L", o) for o in offsets)
    items = b"".join(b"\xfe\xff\x00\xe0" + struct.pack("<L", len(f) + len(f) % 2) + f + b"\0" * (len(f) % 2)
                     for f in frames)
    value = b"\xfe\xff\x00\xe0" + struct.pack("<L", len(table)) + table + items
    return encapsulated_file(frames, RLELossless, pixel_value=value)


def without_sequence_delimiter() -> bytes:
    data = rle_file()
    assert data.endswith(SEQUENCE_DELIMITER)
    return data[: -len(SEQUENCE_DELIMITER)]


def jpeg(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), 100, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def jpeg_file(frame_sizes: list[int]) -> bytes:
    return encapsulated_file([jpeg(s) for s in frame_sizes], JPEGBaseline8Bit, BitsAllocated=8, BitsStored=8,
                             HighBit=7, PixelRepresentation=0)


def j2k_bomb(size: int = 4096) -> bytes:
    """A 16×16 image whose JPEG 2000 codestream (a few hundred bytes) decodes to size×size."""
    stream = openjpeg.encode(np.zeros((size, size), np.uint16), bits_stored=16)
    return encapsulated_file([stream], JPEG2000Lossless, PixelRepresentation=0)


def implicit_data_explicit_meta() -> bytes:
    data = raw_with(base(), ImplicitVRLittleEndian)
    return _set_meta_ts(data, pydicom.uid.ExplicitVRLittleEndian)


def explicit_data_implicit_meta() -> bytes:
    return _set_meta_ts(to_bytes(base()), ImplicitVRLittleEndian)


def little_data_big_meta() -> bytes:
    return _set_meta_ts(to_bytes(base()), ExplicitVRBigEndian)


def _set_meta_ts(data: bytes, ts: str) -> bytes:
    """Rewrite the TransferSyntaxUID value in the file meta of ``data`` (same length, padded)."""
    at = data.index(b"\x02\x00\x10\x00UI")
    (length,) = struct.unpack_from("<H", data, at + 6)
    value = ts.encode() + b"\0" * (len(ts) % 2)
    head = data[:at + 6] + struct.pack("<H", len(value)) + value
    rest = data[at + 8 + length:]
    # the meta group length (0002,0000) must follow the change
    grown = len(value) - length
    group_at = data.index(b"\x02\x00\x00\x00UL")
    (group_length,) = struct.unpack_from("<L", data, group_at + 8)
    head = head[:group_at + 8] + struct.pack("<L", group_length + grown) + head[group_at + 12:]
    return head + rest


def duplicated_patient_id() -> bytes:
    data = to_bytes(base())
    at = data.index(b"\x10\x00\x20\x00LO")
    (length,) = struct.unpack_from("<H", data, at + 6)
    element = data[at:at + 8 + length]
    return data[:at] + element + element + data[at + 8 + length:]


def duplicated_meta_element() -> bytes:
    data = to_bytes(base())
    at = data.index(b"\x02\x00\x03\x00UI")
    (length,) = struct.unpack_from("<H", data, at + 6)
    element = data[at:at + 8 + length]
    group_at = data.index(b"\x02\x00\x00\x00UL")
    (group_length,) = struct.unpack_from("<L", data, group_at + 8)
    data = data[:group_at + 8] + struct.pack("<L", group_length + len(element)) + data[group_at + 12:]
    return data[:at] + element + element + data[at + 8 + length:]


def huge_sequence(items: int = 100_000) -> bytes:
    """ReferencedImageSequence (0008,1140) with ``items`` empty items (pydicom would take long to make it)."""
    ds = base()
    ds.ReferencedImageSequence = Sequence([Dataset()])
    data = to_bytes(ds)
    one = b"\x08\x00\x40\x11SQ\x00\x00" + struct.pack("<L", 8) + b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    many = b"\x08\x00\x40\x11SQ\x00\x00" + struct.pack("<L", 8 * items) + b"\xfe\xff\x00\xe0\x00\x00\x00\x00" * items
    assert data.count(one) == 1
    return data.replace(one, many)


def deeply_nested(depth: int = 40) -> bytes:
    ds = base()
    inner = Dataset()
    for _ in range(depth):
        outer = Dataset()
        outer.ReferencedImageSequence = Sequence([inner])
        inner = outer
    ds.ReferencedImageSequence = inner.ReferencedImageSequence
    return to_bytes(ds)


def deflate_bomb(pixel_bytes: int = 64 * 2**20) -> bytes:
    """A 16×16 deflated image whose pixel data inflates to ``pixel_bytes`` of zeros."""
    ds = base()
    ds.PixelData = bytes(pixel_bytes)
    return raw_with(ds, DeflatedExplicitVRLittleEndian)


def frames_not_a_number() -> bytes:
    data = with_attrs(NumberOfFrames=999)()
    assert data.count(b"IS\x04\x00999 ") == 1
    return data.replace(b"IS\x04\x00999 ", b"IS\x04\x00abc ")


def encapsulated_under_native_syntax() -> bytes:
    return _set_meta_ts(rle_file(), pydicom.uid.ExplicitVRLittleEndian)


def meta_differs(keyword: str) -> Callable[[], bytes]:
    """The file meta's copy of SOPInstanceUID / SOPClassUID changed in one digit (same length)."""
    def build():
        ds = base()
        data = to_bytes(ds)
        value = str(getattr(ds, keyword)).encode()
        other = value[:-1] + (b"4" if value[-1:] != b"4" else b"5")
        at = data.index(value)  # the file meta comes first
        return data[:at] + other + data[at + len(value):]
    return build


def palette_without_lut() -> bytes:
    ds = base(PhotometricInterpretation="PALETTE COLOR", BitsAllocated=8, BitsStored=8, HighBit=7,
              PixelRepresentation=0)
    ds.PixelData = bytes(16 * 16)
    return to_bytes(ds)


def same_uid(keyword: str) -> Callable[[], bytes]:
    def build():
        ds = base()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = getattr(ds, keyword)
        return to_bytes(ds)
    return build


def trailing(after: str) -> Callable[[], bytes]:
    def build():
        data = rle_file() if after == "encapsulated" else to_bytes(base())
        return data + b"MZ\x90\x00" + b"\x03" * 60  # a PE header's start after the pixel data
    return build


DICOM_CASES: list[Case] = [
    # pixel attributes against the pixel data
    ("pixel data too short", pixels(510), "pixel data too short: it is 510 bytes"),
    ("pixel data too long", pixels(514), "pixel data too long: it is 514 bytes"),
    ("pixel data twice too long", pixels(1024), "pixel data too long: it is 1024 bytes"),
    ("NumberOfFrames 0", with_attrs(NumberOfFrames=0), "NumberOfFrames is 0"),
    ("NumberOfFrames abc", frames_not_a_number, "NumberOfFrames is 'abc', not a number"),
    ("NumberOfFrames 2 for one frame", with_attrs(NumberOfFrames=2), "pixel data too short"),
    ("BitsAllocated 12", with_attrs(BitsAllocated=12, BitsStored=12, HighBit=11), "BitsAllocated is 12"),
    ("BitsAllocated 1 for CT", with_attrs(BitsAllocated=1, BitsStored=1, HighBit=0), "BitsAllocated is 1"),
    ("BitsStored over BitsAllocated", with_attrs(BitsStored=17, HighBit=16), "BitsStored 17 is more than"),
    ("HighBit not BitsStored-1", with_attrs(BitsStored=12, HighBit=15), "HighBit 15 is not BitsStored"),
    ("PixelRepresentation 2", with_attrs(PixelRepresentation=2), "PixelRepresentation is 2"),
    ("PhotometricInterpretation missing", with_attrs(PhotometricInterpretation=None),
     "PhotometricInterpretation is missing"),
    ("PALETTE COLOR without LUT", palette_without_lut, "PALETTE COLOR image without its red palette"),
    ("Rows 0", with_attrs(Rows=0), "image attribute Rows is 0"),
    ("Columns missing", with_attrs(Columns=None), "image attribute Columns is missing"),
    ("RGB with one sample", with_attrs(PhotometricInterpretation="RGB"), "RGB needs SamplesPerPixel 3"),
    # encapsulated and RLE framing, every frame
    ("basic offset table past the end", bot_offset_past_the_end, "basic offset table: frame 3 starts at"),
    ("RLE segment count wrong in frame 3", rle_bad_segments_in_frame_3, "RLE frame 3 has 1 segments"),
    ("RLE segment offsets outside frame 2", rle_offsets_outside_frame_2, "RLE frame 2: segment offsets"),
    ("more fragments than frames", lambda: encapsulated_file(rle_frames(3), RLELossless, frames=2, bot=False),
     "3 fragments for 2 frames"),
    ("fewer fragments than frames", lambda: encapsulated_file(rle_frames(3), RLELossless, frames=4, bot=False),
     "3 fragment(s) for 4 frames"),
    ("offset table counts other frames", lambda: encapsulated_file(rle_frames(3), RLELossless, frames=4),
     "basic offset table lists 3 frames"),
    ("missing sequence delimiter", without_sequence_delimiter, "encapsulated pixel data has no sequence delimiter"),
    ("encapsulated under a native syntax", encapsulated_under_native_syntax,
     "encapsulated pixel data under an uncompressed transfer syntax"),
    ("JPEG frame header bigger than Rows/Columns", lambda: jpeg_file([64]), "JPEG frame 1 declares 64×64 pixels"),
    ("JPEG frame 2 of 2 bigger", lambda: jpeg_file([16, 48]), "JPEG frame 2 declares 48×48 pixels"),
    ("JPEG 2000 bomb (SIZ bigger than Rows/Columns)", j2k_bomb, "JPEG 2000 frame 1 declares 4096×4096"),
    # encoding against the transfer syntax
    ("implicit VR data under an explicit syntax", implicit_data_explicit_meta, "data set encoded with implicit VR"),
    ("explicit VR data under an implicit syntax", explicit_data_implicit_meta, "data set encoded with explicit VR"),
    ("little endian data under big endian", little_data_big_meta, "data set encoded little endian"),
    # trailing bytes
    ("bytes after native pixel data", trailing("native"), "64 bytes trail after the pixel data"),
    ("bytes after the sequence delimiter", trailing("encapsulated"), "64 bytes trail after the pixel data"),
    # file meta against the data set, duplicates, self-referencing UIDs
    ("MediaStorageSOPInstanceUID differs", meta_differs("SOPInstanceUID"), "file meta MediaStorageSOPInstanceUID"),
    ("MediaStorageSOPClassUID differs", meta_differs("SOPClassUID"), "file meta MediaStorageSOPClassUID"),
    ("duplicated element in the data set", duplicated_patient_id, "duplicated element (0010,0020)"),
    ("duplicated element in the file meta", duplicated_meta_element, "duplicated element (0002,0003)"),
    ("SOPInstanceUID equals StudyInstanceUID", same_uid("StudyInstanceUID"), "SOPInstanceUID equals the StudyInstanceUID"),
    ("SOPInstanceUID equals SeriesInstanceUID", same_uid("SeriesInstanceUID"),
     "SOPInstanceUID equals the SeriesInstanceUID"),
    # decompression bombs and unbounded input
    ("deflate bomb", deflate_bomb, "deflated data set inflates past"),
    ("sequence of 100,000 items", huge_sequence, "sequence (0008,1140) holds more than"),
    ("sequences nested 40 deep", deeply_nested, "sequences nested deeper than"),
]


# --- zips -----------------------------------------------------------------------------------------


def zip_of(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _eocd(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


def _central(data: bytes) -> int:
    return data.index(b"PK\x01\x02")


def empty_zip() -> bytes:
    return zip_of({})


def folders_only_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.mkdir("CT")
        zf.mkdir("CT/series1")
    return buf.getvalue()


def zip_bad_eocd_offset() -> bytes:
    data = bytearray(zip_of({"IM0": to_bytes(base())}))
    at = _eocd(data)
    struct.pack_into("<L", data, at + 16, len(data) + 5000)  # central directory "starts" past the end
    return bytes(data)


def zip_unsupported_method() -> bytes:
    data = bytearray(zip_of({"IM0": to_bytes(base())}, zipfile.ZIP_STORED))
    struct.pack_into("<H", data, 8, 99)  # local header
    struct.pack_into("<H", data, _central(data) + 10, 99)  # central directory
    return bytes(data)


def zip_crc_lie() -> bytes:
    data = bytearray(zip_of({"IM0": to_bytes(base())}))
    central = _central(data)
    (crc,) = struct.unpack_from("<L", data, central + 16)
    struct.pack_into("<L", data, central + 16, crc ^ 0xFFFF)
    struct.pack_into("<L", data, 14, crc ^ 0xFFFF)
    return bytes(data)


def zip_count_lie() -> bytes:
    data = bytearray(zip_of({"IM0": to_bytes(base())}))
    at = _eocd(data)
    struct.pack_into("<HH", data, at + 8, 7, 7)
    return bytes(data)


def zip_entry_past_the_end() -> bytes:
    data = bytearray(zip_of({"IM0": to_bytes(base())}))
    struct.pack_into("<L", data, _central(data) + 42, 10**6)  # the entry's local header offset
    return bytes(data)


def zip_truncated() -> bytes:
    data = zip_of({"IM0": to_bytes(base())})
    return data[: len(data) // 2]


def zip_size_lie() -> bytes:
    data = bytearray(zip_of({"IM0": to_bytes(base())}, zipfile.ZIP_STORED))
    central = _central(data)
    (size,) = struct.unpack_from("<L", data, central + 24)
    struct.pack_into("<L", data, central + 24, size - 100)  # uncompressed size
    struct.pack_into("<L", data, 22, size - 100)
    return bytes(data)


def zip_of_hostile_dicom() -> bytes:
    return zip_of({"IM0": pixels(514)()})


ZIP_CASES: list[Case] = [
    ("empty zip", empty_zip, "no DICOM files in the zip"),
    ("zip with only folders", folders_only_zip, "no DICOM files in the zip"),
    ("zip with a bad end-record offset", zip_bad_eocd_offset, "corrupt zip"),
    ("zip with compression method 99", zip_unsupported_method, "uses compression method 99"),
    ("zip whose CRC lies", zip_crc_lie, "corrupt zip entry: BadZipFile: Bad CRC-32"),
    ("zip whose entry count lies", zip_count_lie, "the end record counts 7 entries"),
    ("zip entry past the end", zip_entry_past_the_end, "lies past the end of the file"),
    ("truncated zip", zip_truncated, "not a readable zip file"),
    ("zip whose size lies", zip_size_lie, "corrupt zip entry"),
    ("zip of a hostile DICOM file", zip_of_hostile_dicom, "pixel data too long"),
]
