"""Parse and validate one DICOM file before it may enter the archive.

Everything a PACS or a user can get wrong becomes an ``InvalidDicom`` with a reason a person can
act on. Headers are parsed first; pixel data is checked for presence and length (native transfer
syntaxes, without decoding) or decoded once (compressed syntaxes, to prove a decoder exists).
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

log = logging.getLogger(__name__)
PIXEL_DATA_TAGS = {0x7FE00010: "PixelData", 0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData"}
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
NATIVE_SYNTAXES = {
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
}
DEFLATED_SYNTAXES = {pydicom.uid.DeflatedExplicitVRLittleEndian}


# DICOM storage failure reasons (PS3.4 Annex B / PS3.18 STOW-RS FailureReason).
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
PROCESSING_FAILURE = 0x0110


class InvalidDicom(Exception):
    """The file cannot be archived; ``str(exc)`` says why in words for the uploader.

    ``code`` is the DICOM failure reason that STOW-RS reports for it.
    """

    def __init__(self, reason: str, code: int = CANNOT_UNDERSTAND):
        super().__init__(reason)
        self.code = code


def check_uid(value: Any, keyword: str) -> str:
    """A UID that is safe in a path and valid per PS3.5 §9 (digits and dots, at most 64 chars)."""
    uid = str(value or "").strip().rstrip("\x00")
    if not uid:
        raise InvalidDicom(f"missing required UID {keyword}", DOES_NOT_MATCH_SOP_CLASS)
    if len(uid) > 64 or not UID_RE.match(uid):
        shown = uid if len(uid) <= 80 else uid[:77] + "..."
        raise InvalidDicom(
            f"invalid {keyword} {shown!r}: a UID is digits separated by dots, at most 64 characters",
            DOES_NOT_MATCH_SOP_CLASS,
        )
    return uid


@dataclass
class ParsedDicom:
    """What the archive keeps about one validated file."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    bits_allocated: int
    samples_per_pixel: int
    number_of_frames: int
    pixel_data_offset: int | None
    pixel_data_length: int | None
    study: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    instance: dict = field(default_factory=dict)

    @property
    def is_localizer(self) -> bool:
        """Scout / localizer images: kept, but outside the series' volume geometry."""
        return "LOCALIZER" in self.instance.get("image_type", "").upper().split("\\")


def parse_dicom(fp: BinaryIO, size: int) -> ParsedDicom:
    """Validate the open file ``fp`` (``size`` bytes) and return its archive attributes.

    Raises InvalidDicom with the reason, whatever is wrong with the file.
    """
    try:
        return _parse(fp, size)
    except InvalidDicom:
        raise
    except Exception as exc:  # a reader bug on a malformed file must not crash an upload
        log.warning("unexpected error while parsing an upload", exc_info=True)
        raise InvalidDicom(f"unreadable DICOM file ({type(exc).__name__}: {exc})") from None


def _parse(fp: BinaryIO, size: int) -> ParsedDicom:
    fp.seek(0)
    head = fp.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise InvalidDicom("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise InvalidDicom(f"not a valid DICOM file: {exc}") from None
    except (EOFError, struct.error) as exc:
        raise InvalidDicom(f"file is truncated: {exc or 'unexpected end of file'}") from None
    except Exception as exc:  # pydicom raises many kinds on corrupt headers
        raise InvalidDicom(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from None
    header_end = fp.tell()

    meta = getattr(ds, "file_meta", None)
    ts_raw = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if not ts_raw:
        raise InvalidDicom("missing TransferSyntaxUID in the file meta information")
    ts = UID(check_uid(ts_raw, "TransferSyntaxUID"))
    little_endian = ts != pydicom.uid.ExplicitVRBigEndian
    uids = {kw: check_uid(ds.get(kw), kw) for kw in REQUIRED_UIDS}

    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    bits_allocated = _int(ds, "BitsAllocated")
    frames = _int(ds, "NumberOfFrames") or 1
    if ts in DEFLATED_SYNTAXES:
        offset, length = None, _deflated_pixel_length(fp)
    else:
        offset, length = _pixel_data_location(fp, header_end, size, ts, little_endian)
    if length is None and header_end >= size:
        fp.seek(max(0, size - 12))
        if b"\xe0\x7f\x10\x00" in fp.read(12):  # the file stops inside the pixel data header
            raise InvalidDicom("file is truncated inside the pixel data element header")
    if length is None:
        raise InvalidDicom(
            "no pixel data: only image objects are archived (SR, RT structures, "
            "presentation states and the like are not)",
            DOES_NOT_MATCH_SOP_CLASS,
        )
    if not rows or not columns or not bits_allocated:
        raise InvalidDicom(
            "image attributes missing: Rows, Columns and BitsAllocated are required", DOES_NOT_MATCH_SOP_CLASS
        )

    if ts in NATIVE_SYNTAXES or ts in DEFLATED_SYNTAXES:
        expected = _native_pixel_bytes(ds, rows, columns, bits_allocated, frames)
        # Trailing padding after the last frame is harmless (readers ignore it); too few bytes is not.
        if length < expected:
            raise InvalidDicom(
                f"pixel data is {length} bytes but Rows×Columns×Samples×BitsAllocated×Frames "
                f"({rows}×{columns}×{_int(ds, 'SamplesPerPixel') or 1}×{bits_allocated}×{frames}) "
                f"needs {expected}"
            )
    else:
        _check_compressed_decodes(fp, ts)

    return ParsedDicom(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=str(ts),
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        samples_per_pixel=_int(ds, "SamplesPerPixel") or 1,
        number_of_frames=frames,
        pixel_data_offset=offset,
        pixel_data_length=length,
        study=_study_attributes(ds),
        series=_series_attributes(ds, rows, columns),
        instance=_instance_attributes(ds),
    )


def _pixel_data_location(
    fp: BinaryIO, pos: int, size: int, ts: UID, little: bool
) -> tuple[int | None, int | None]:
    """(offset of the pixel data value, its length) read from the element header at ``pos``.

    Length is None when the file has no pixel data element. For encapsulated data the length is
    the bytes from the value start to the end of the file (fragments are parsed later).
    """
    fp.seek(pos)
    header = fp.read(12)
    if len(header) < 4:
        return None, None
    group, elem = struct.unpack("<HH" if little else ">HH", header[:4])
    tag = (group << 16) | elem
    if tag not in PIXEL_DATA_TAGS:
        return None, None
    # The VR says how the element is really encoded: some writers declare an explicit-VR transfer
    # syntax and write implicit VR (pydicom reads both).
    implicit = not (header[4:6].isalpha() and header[4:6].isupper())
    if len(header) < (8 if implicit else 12):
        raise InvalidDicom("file is truncated inside the pixel data element header")
    if implicit:
        (length,) = struct.unpack("<L", header[4:8])
        value_offset = pos + 8
    else:
        (length,) = struct.unpack("<L" if little else ">L", header[8:12])
        value_offset = pos + 12
    if length == 0xFFFFFFFF:  # encapsulated (compressed) pixel data
        if ts in NATIVE_SYNTAXES:
            raise InvalidDicom("pixel data is encapsulated but the transfer syntax is uncompressed")
        return value_offset, size - value_offset
    if value_offset + length > size:
        raise InvalidDicom(
            f"file is truncated: pixel data declares {length} bytes but only {size - value_offset} remain"
        )
    return value_offset, length


def _deflated_pixel_length(fp: BinaryIO) -> int | None:
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp)
    except Exception as exc:
        raise InvalidDicom(f"corrupt deflated DICOM file: {exc}") from None
    for keyword in PIXEL_DATA_TAGS.values():
        if keyword in ds:
            return len(ds[keyword].value)
    return None


def _native_pixel_bytes(ds, rows: int, columns: int, bits_allocated: int, frames: int) -> int:
    samples = _int(ds, "SamplesPerPixel") or 1
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # two samples per pixel after chroma subsampling
    bits = rows * columns * samples * frames * bits_allocated
    return (bits + 7) // 8


def _check_compressed_decodes(fp: BinaryIO, ts: UID) -> None:
    try:
        decoder = get_decoder(ts) if ts.is_transfer_syntax else None
    except NotImplementedError:  # pydicom knows no decoder at all for this syntax
        decoder = None
    if decoder is None or not decoder.is_available:
        raise InvalidDicom(
            f"unsupported transfer syntax {ts.name if ts.is_transfer_syntax else ts} ({ts}): "
            "no decoder is installed for it",
            TRANSFER_SYNTAX_NOT_SUPPORTED,
        )
    fp.seek(0)
    try:
        pixel_array(fp, index=0)  # decode the first frame only
    except Exception as exc:
        raise InvalidDicom(f"compressed pixel data ({ts.name}) cannot be decoded: {exc}") from None


def _int(ds, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _str(ds, keyword: str, max_length: int) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip().replace("\x00", "")[:max_length]


def _date(value) -> dt.date | None:
    text = str(value or "").strip()
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date() if len(text) >= 8 else None
    except ValueError:
        return None


def _time(value) -> dt.time | None:
    text = str(value or "").strip().split(".")[0].replace(":", "")
    for fmt, n in (("%H%M%S", 6), ("%H%M", 4), ("%H", 2)):
        try:
            return dt.datetime.strptime(text[:n], fmt).time() if len(text) >= n else None
        except ValueError:
            continue
    return None


def _floats(value, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _study_attributes(ds) -> dict:
    return {
        "patient_id": _str(ds, "PatientID", 64),
        "patient_name": _str(ds, "PatientName", 324),
        "patient_sex": _str(ds, "PatientSex", 16),
        "patient_birth_date": _date(ds.get("PatientBirthDate")),
        "study_date": _date(ds.get("StudyDate")),
        "study_time": _time(ds.get("StudyTime")),
        "study_id": _str(ds, "StudyID", 16),
        "description": _str(ds, "StudyDescription", 64),
        "accession_number": _str(ds, "AccessionNumber", 16),
        "referring_physician": _str(ds, "ReferringPhysicianName", 324),
        "institution": _str(ds, "InstitutionName", 64),
    }


def _series_attributes(ds, rows: int, columns: int) -> dict:
    spacing = _floats(ds.get("PixelSpacing"), 2) or [None, None]
    return {
        "modality": _str(ds, "Modality", 16),
        "series_number": _int(ds, "SeriesNumber"),
        "description": _str(ds, "SeriesDescription", 64),
        "body_part": _str(ds, "BodyPartExamined", 64),
        "frame_of_reference_uid": _str(ds, "FrameOfReferenceUID", 64),
        "manufacturer": _str(ds, "Manufacturer", 64),
        "rows": rows,
        "columns": columns,
        "pixel_spacing_row_mm": spacing[0],
        "pixel_spacing_col_mm": spacing[1],
        "slice_thickness_mm": _float(ds.get("SliceThickness")),
        "image_orientation": _floats(ds.get("ImageOrientationPatient"), 6),
        "kvp": _float(ds.get("KVP")),
        "convolution_kernel": _str(ds, "ConvolutionKernel", 64),
    }


def _instance_attributes(ds) -> dict:
    position = _floats(ds.get("ImagePositionPatient"), 3) or [None, None, None]
    image_type = ds.get("ImageType")
    if isinstance(image_type, (list, pydicom.multival.MultiValue)):
        image_type = "\\".join(str(v) for v in image_type)
    return {
        "image_type": str(image_type or "")[:128],
        "instance_number": _int(ds, "InstanceNumber"),
        "position_x_mm": position[0],
        "position_y_mm": position[1],
        "position_z_mm": position[2],
        "image_orientation": _floats(ds.get("ImageOrientationPatient"), 6),
        "slice_location_mm": _float(ds.get("SliceLocation")),
    }
