"""Parse and validate one DICOM file before it may enter the archive.

Everything a PACS or a user can get wrong becomes an ``InvalidDicom`` with a reason a person can
act on, and a file is admitted only if the archive can serve it. In order:

1. the raw element stream is walked (``dicomwalk``): encoding against the transfer syntax,
   duplicated tags, truncation, trailing bytes, sequence and element limits;
2. the header is parsed by pydicom and checked: UIDs, file meta against the data set, the Image
   Pixel module (Rows, Columns, frames, samples, bits, photometric interpretation, palette);
3. native pixel data must be exactly the size the attributes imply (one pad byte allowed);
   encapsulated data is checked frame by frame from headers (``pixelframes``), then the first and
   last frames are decoded, each bounded by the checked attributes.

Deflated files are inflated first (``deflated.inflate_deflated``), streamed with a hard cap, and
stored as Explicit VR Little Endian so that every reader can serve them.
"""
from __future__ import annotations

import datetime as dt
import io
import logging
import mmap
import re
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pydicom
from django.conf import settings
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from . import dicomwalk, pixelframes
from .dicomerrors import (  # noqa: F401  (re-exported: callers import them from here)
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    InvalidDicom,
)

log = logging.getLogger(__name__)
PIXEL_DATA_TAGS = dicomwalk.PIXEL_DATA_TAGS
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
NATIVE_SYNTAXES = {
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
}
DEFLATED_SYNTAXES = {pydicom.uid.DeflatedExplicitVRLittleEndian}
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
PHOTOMETRIC_INTERPRETATIONS = {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
                               "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB"}


def limit(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


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

    Raises InvalidDicom with the reason, whatever is wrong with the file. A deflated file must
    have been through ``deflated.inflate_deflated`` first.
    """
    try:
        return _parse(fp, size)
    except InvalidDicom:
        raise
    except Exception as exc:  # a reader bug on a malformed file must not crash an upload
        log.warning("unexpected error while parsing an upload", exc_info=True)
        raise InvalidDicom(f"unreadable DICOM file ({type(exc).__name__}: {exc})") from None


def file_buffer(fp: BinaryIO, size: int):
    """Random access to the whole file without reading it into memory where it is a real file."""
    try:
        return mmap.mmap(fp.fileno(), size, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        fp.seek(0)
        return fp.read(size)


def check_preamble(fp: BinaryIO) -> None:
    fp.seek(0)
    head = fp.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise InvalidDicom("not a DICOM file (no 'DICM' marker after the 128-byte preamble)")


def read_transfer_syntax(buf, size: int) -> tuple[UID, int]:
    """The transfer syntax named in the file meta, and where the data set starts."""
    start, meta = dicomwalk.read_meta(buf, size)
    raw = meta.get(0x00020010)
    if not raw or not raw.strip(b"\x00 "):
        raise InvalidDicom("missing TransferSyntaxUID in the file meta information")
    ts = UID(check_uid(raw.decode("ascii", "replace").strip("\x00 "), "TransferSyntaxUID"))
    return ts, start


def _encoding(ts: UID) -> dicomwalk.Encoding:
    if ts == pydicom.uid.ImplicitVRLittleEndian:
        return dicomwalk.IMPLICIT_LE
    return dicomwalk.Encoding(True, ts != pydicom.uid.ExplicitVRBigEndian)


def walk_limits() -> dict:
    return {
        "max_items": limit("ARCHIVE_MAX_SEQUENCE_ITEMS", 10_000),
        "max_elements": limit("ARCHIVE_MAX_ELEMENTS", 200_000),
        "max_depth": limit("ARCHIVE_MAX_SEQUENCE_DEPTH", 16),
    }


def _parse(fp: BinaryIO, size: int) -> ParsedDicom:
    check_preamble(fp)
    buf = file_buffer(fp, size)
    try:
        ts, start = read_transfer_syntax(buf, size)
        if not ts.is_transfer_syntax:
            raise InvalidDicom(f"unsupported transfer syntax {ts}: not a known DICOM transfer syntax",
                               TRANSFER_SYNTAX_NOT_SUPPORTED)
        if ts in DEFLATED_SYNTAXES:
            raise InvalidDicom("deflated data set was not inflated before parsing", PROCESSING_FAILURE)
        enc = _encoding(ts)
        dicomwalk.check_encoding(buf, size, start, enc, ts.name)
        walked = dicomwalk.walk(buf, size, start, enc, **walk_limits())
        return _parse_walked(fp, buf, size, ts, walked)
    finally:
        if isinstance(buf, mmap.mmap):
            buf.close()


def _parse_walked(fp: BinaryIO, buf, size: int, ts: UID, walked: dicomwalk.Walk) -> ParsedDicom:
    fp.seek(0)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise InvalidDicom(f"not a valid DICOM file: {exc}") from None
    except (EOFError, struct.error) as exc:
        raise InvalidDicom(f"file is truncated: {exc or 'unexpected end of file'}") from None
    except Exception as exc:  # pydicom raises many kinds on corrupt headers
        raise InvalidDicom(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from None

    uids = {kw: check_uid(ds.get(kw), kw) for kw in REQUIRED_UIDS}
    _check_identity(ds.file_meta, uids)
    pixel = walked.pixel
    if pixel is None:
        raise InvalidDicom(
            "no pixel data: only image objects are archived (SR, RT structures, "
            "presentation states and the like are not)",
            DOES_NOT_MATCH_SOP_CLASS,
        )
    image = image_module(ds, pixel.tag, uids["SOPClassUID"])
    implied = implied_pixel_bytes(ds, image, pixel.tag)
    cap = limit("ARCHIVE_MAX_DECODED_BYTES", 1024 ** 3)
    if implied > cap:
        raise InvalidDicom(
            f"image attributes imply {implied // 2**20} MB of pixel data, more than the limit of "
            f"{cap // 2**20} MB", OUT_OF_RESOURCES,
        )
    if pixel.encapsulated:
        if ts in NATIVE_SYNTAXES:
            raise InvalidDicom(f"encapsulated pixel data under an uncompressed transfer syntax ({ts.name})")
        pixelframes.check_frames(buf, pixel.fragments, ts, image)
        _check_compressed_decodes(fp, ts, image.frames)
    else:
        if ts not in NATIVE_SYNTAXES:
            raise InvalidDicom(f"the transfer syntax {ts.name} is compressed but the pixel data is not encapsulated")
        _check_native_length(pixel.length, implied, image)

    return ParsedDicom(
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        sop_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=str(ts),
        rows=image.rows,
        columns=image.columns,
        bits_allocated=image.bits_allocated,
        samples_per_pixel=image.samples,
        number_of_frames=image.frames,
        pixel_data_offset=pixel.value_offset,
        pixel_data_length=pixel.length,
        study=_study_attributes(ds),
        series=_series_attributes(ds, image.rows, image.columns),
        instance=_instance_attributes(ds),
    )


def _check_identity(meta, uids: dict[str, str]) -> None:
    """The file meta names the same object as the data set; the object is not its own study/series."""
    for meta_kw, kw in (("MediaStorageSOPInstanceUID", "SOPInstanceUID"), ("MediaStorageSOPClassUID", "SOPClassUID")):
        value = str(meta.get(meta_kw, "") or "").strip().rstrip("\x00")
        if value and value != uids[kw]:
            raise InvalidDicom(
                f"file meta {meta_kw} {value} differs from the data set's {kw} {uids[kw]}",
                DOES_NOT_MATCH_SOP_CLASS,
            )
    for kw in ("StudyInstanceUID", "SeriesInstanceUID"):
        if uids["SOPInstanceUID"] == uids[kw]:
            raise InvalidDicom(f"SOPInstanceUID equals the {kw}: an instance needs its own UID",
                               DOES_NOT_MATCH_SOP_CLASS)
    if uids["StudyInstanceUID"] == uids["SeriesInstanceUID"]:
        raise InvalidDicom("SeriesInstanceUID equals the StudyInstanceUID", DOES_NOT_MATCH_SOP_CLASS)


def _required_int(ds, keyword: str, *, low: int, high: int) -> int:
    value = ds.get(keyword)
    if value in (None, ""):
        raise InvalidDicom(f"image attribute {keyword} is missing", DOES_NOT_MATCH_SOP_CLASS)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidDicom(f"image attribute {keyword} is {str(value)[:32]!r}, not a number",
                           DOES_NOT_MATCH_SOP_CLASS) from None
    if not low <= number <= high:
        raise InvalidDicom(f"image attribute {keyword} is {number}, outside {low}..{high}", DOES_NOT_MATCH_SOP_CLASS)
    return number


def image_module(ds, pixel_tag: int, sop_class_uid: str) -> pixelframes.Image:
    """The Image Pixel module, checked for consistency (PS3.3 C.7.6.3)."""
    rows = _required_int(ds, "Rows", low=1, high=65535)
    columns = _required_int(ds, "Columns", low=1, high=65535)
    frames = _required_int(ds, "NumberOfFrames", low=1, high=2**31) if "NumberOfFrames" in ds else 1
    samples = _required_int(ds, "SamplesPerPixel", low=1, high=3) if "SamplesPerPixel" in ds else 1
    if samples == 2:
        raise InvalidDicom("image attribute SamplesPerPixel is 2, which is not 1 or 3", DOES_NOT_MATCH_SOP_CLASS)
    bits_allocated = _required_int(ds, "BitsAllocated", low=1, high=64)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise InvalidDicom("image attribute PhotometricInterpretation is missing", DOES_NOT_MATCH_SOP_CLASS)
    if photometric not in PHOTOMETRIC_INTERPRETATIONS:
        raise InvalidDicom(f"unknown PhotometricInterpretation {photometric[:32]!r}", DOES_NOT_MATCH_SOP_CLASS)
    if pixel_tag != 0x7FE00010:  # float / double float pixel data: no BitsStored, HighBit or sign
        if bits_allocated != (32 if pixel_tag == 0x7FE00008 else 64):
            raise InvalidDicom(f"BitsAllocated {bits_allocated} does not match {PIXEL_DATA_TAGS[pixel_tag]}",
                               DOES_NOT_MATCH_SOP_CLASS)
        return pixelframes.Image(rows, columns, frames, samples, bits_allocated)
    binary_seg = (bits_allocated == 1 and sop_class_uid == SEGMENTATION_STORAGE
                  and str(ds.get("SegmentationType", "")).upper() == "BINARY")
    if bits_allocated not in (8, 16, 32) and not binary_seg:
        raise InvalidDicom(
            f"BitsAllocated is {bits_allocated}; the archive takes 8, 16 or 32 (1 only for binary segmentations)",
            DOES_NOT_MATCH_SOP_CLASS,
        )
    bits_stored = _required_int(ds, "BitsStored", low=1, high=64)
    if bits_stored > bits_allocated:
        raise InvalidDicom(f"BitsStored {bits_stored} is more than BitsAllocated {bits_allocated}",
                           DOES_NOT_MATCH_SOP_CLASS)
    high_bit = _required_int(ds, "HighBit", low=0, high=63)
    if high_bit != bits_stored - 1:
        raise InvalidDicom(f"HighBit {high_bit} is not BitsStored − 1 ({bits_stored - 1})", DOES_NOT_MATCH_SOP_CLASS)
    _required_int(ds, "PixelRepresentation", low=0, high=1)
    if photometric == "PALETTE COLOR":
        _check_palette(ds)
    if photometric.startswith("MONOCHROME") or photometric == "PALETTE COLOR":
        if samples != 1:
            raise InvalidDicom(f"{photometric} needs SamplesPerPixel 1, not {samples}", DOES_NOT_MATCH_SOP_CLASS)
    elif samples != 3:
        raise InvalidDicom(f"{photometric} needs SamplesPerPixel 3, not {samples}", DOES_NOT_MATCH_SOP_CLASS)
    return pixelframes.Image(rows, columns, frames, samples, bits_allocated)


def _check_palette(ds) -> None:
    for color in ("Red", "Green", "Blue"):
        descriptor = ds.get(f"{color}PaletteColorLookupTableDescriptor")
        data = ds.get(f"{color}PaletteColorLookupTableData") or ds.get(f"Segmented{color}PaletteColorLookupTableData")
        if descriptor is None or data is None:
            raise InvalidDicom(
                f"PALETTE COLOR image without its {color.lower()} palette lookup table (descriptor and data)",
                DOES_NOT_MATCH_SOP_CLASS,
            )


def implied_pixel_bytes(ds, image: pixelframes.Image, pixel_tag: int) -> int:
    """Bytes of native pixel data that Rows × Columns × frames × samples × bits imply."""
    samples = image.samples
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "YBR_FULL_422":
        samples = 2  # two samples per pixel after chroma subsampling
    bits = image.rows * image.columns * samples * image.frames * image.bits_allocated
    return (bits + 7) // 8


def _check_native_length(length: int, expected: int, image: pixelframes.Image) -> None:
    if length == expected or (expected % 2 and length == expected + 1):  # one pad byte to an even length
        return
    product = f"{image.rows}×{image.columns}×{image.samples}×{image.bits_allocated}×{image.frames}"
    raise InvalidDicom(
        f"pixel data too {'long' if length > expected else 'short'}: it is {length} bytes, but "
        f"Rows×Columns×Samples×BitsAllocated×Frames ({product}) needs {expected}"
    )


def _check_compressed_decodes(fp: BinaryIO, ts: UID, frames: int) -> None:
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:  # pydicom knows no decoder at all for this syntax
        decoder = None
    if decoder is None or not decoder.is_available:
        raise InvalidDicom(
            f"unsupported transfer syntax {ts.name} ({ts}): no decoder is installed for it",
            TRANSFER_SYNTAX_NOT_SUPPORTED,
        )
    # Every frame's header was checked against the attributes; decode the first and the last
    # frame (each at most Rows × Columns × samples × bytes) to prove the codec reads them.
    for index in sorted({0, frames - 1}):
        fp.seek(0)
        try:
            pixel_array(fp, index=index)
        except Exception as exc:
            raise InvalidDicom(f"compressed pixel data ({ts.name}) frame {index + 1} cannot be decoded: {exc}") from None


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
    if isinstance(value, MultiValue):  # several values: DICOM's own separator, not Python's list text
        value = "\\".join(str(v) for v in value)
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
