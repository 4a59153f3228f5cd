"""DICOM JSON (PS3.18 F.2): values from database rows and from stored data sets, element by element.

Stored data is untrusted: an element whose value cannot be converted is sent without its Value (or
left out) and logged with ids only; it never fails the response it belongs to.
"""
from __future__ import annotations

import datetime as dt
import logging
import math

from django.conf import settings
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from webapp.archive.dicomfile import check_uid, InvalidDicom

from .errors import bad_request

log = logging.getLogger(__name__)


def base_url() -> str:
    """Absolute DICOMweb root from settings (never from the Host header)."""
    return settings.DICOMWEB_BASE_URL.rstrip("/")


def tag_hex(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def element(keyword: str, value) -> tuple[str, dict]:
    """(tag, {"vr", "Value"}) for a plain Python value; empty values carry no "Value"."""
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    item: dict = {"vr": vr}
    if value is None or value == "" or value == []:
        return f"{tag:08X}", item
    values = value if isinstance(value, list) else [value]
    try:
        values = _db_values(vr, values)
    except (TypeError, ValueError, OverflowError):
        log.warning("dicomjson: tag %08X has a stored value that is not a valid %s; sent without Value", tag, vr)
        return f"{tag:08X}", item
    item["Value"] = values
    return f"{tag:08X}", item


def _db_values(vr: str, values: list) -> list:
    if vr == "PN":
        return [{"Alphabetic": str(v)} for v in values]
    if vr == "DA":
        return [v.strftime("%Y%m%d") if isinstance(v, dt.date) else str(v) for v in values]
    if vr == "TM":
        return [v.strftime("%H%M%S") if isinstance(v, dt.time) else str(v) for v in values]
    if vr in ("IS", "US", "UL", "SS", "SL"):
        return [int(v) for v in values]
    if vr in ("DS", "FL", "FD"):
        floats = [float(v) for v in values]
        if not all(math.isfinite(v) for v in floats):
            raise ValueError("not a finite number")  # NaN / inf are not JSON
        return floats
    return [str(v) for v in values]


def dataset(**attributes) -> dict:
    return dict(element(k, v) for k, v in attributes.items())


def keyword_of(name: str) -> str:
    """A query key as a keyword: accepts keywords and 8-digit hex tags ('00100020')."""
    if len(name) == 8:
        try:
            keyword = keyword_for_tag(int(name, 16))
        except ValueError:
            keyword = ""
        if keyword:
            return keyword
    if tag_for_keyword(name) is not None:
        return name
    raise bad_request(f"unknown attribute {name!r} (use a DICOM keyword or an 8-digit hex tag)")


def valid_uid(value: str, what: str) -> str:
    try:
        return check_uid(value, what)
    except InvalidDicom as exc:
        raise bad_request(str(exc)) from None


# --- stored data sets -----------------------------------------------------------------------------

# A sequence this large is left out of metadata (a viewer never needs it; parsing it costs seconds).
MAX_SEQUENCE_BYTES = 4 * 2**20
MAX_SEQUENCE_ITEMS = 10_000
_ITEM_TAG = b"\xfe\xff\x00\xe0"


class _Budget:
    """Items converted so far for one data set, across all its sequences."""

    def __init__(self, items: int):
        self.items = items


def dataset_json(ds, *, bulk_threshold: int, bulk_handler, ref: str) -> dict:
    """A pydicom data set as DICOM JSON, element by element.

    An element that cannot be converted (``NumberOfFrames`` = 'abc', a DS of '0,5', NaN, a broken
    sequence) is sent as ``{"vr": ...}`` without Value and logged with ``ref`` (ids only, never
    values). Sequences over MAX_SEQUENCE_BYTES / MAX_SEQUENCE_ITEMS are left out without parsing.
    """
    return _dataset_json(ds, bulk_threshold, bulk_handler, ref, _Budget(MAX_SEQUENCE_ITEMS))


def _dataset_json(ds, bulk_threshold, bulk_handler, ref, budget: _Budget) -> dict:
    out: dict = {}
    for tag in list(ds.keys()):
        key = f"{int(tag):08X}"
        try:
            raw = ds.get_item(tag)
            vr = str(getattr(raw, "VR", "") or "UN")
            if vr == "SQ" and _too_big(raw, budget):
                log.warning("dicomjson: %s: sequence %s is too large for metadata; left out", ref, key)
                continue
            elem = ds[tag]
            vr = elem.VR
            if vr == "SQ":
                items = []
                for item in elem.value:
                    budget.items -= 1
                    if budget.items < 0:
                        raise ValueError("too many sequence items")
                    items.append(_dataset_json(item, bulk_threshold, bulk_handler, ref, budget))
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                continue
            converted = elem.to_json_dict(bulk_handler, bulk_threshold)
            if not _json_safe(converted.get("Value")):
                raise ValueError("value is not representable in JSON")
            out[key] = converted
        except Exception as exc:  # noqa: BLE001 - stored data is untrusted: any failure drops the value
            log.warning("dicomjson: %s: element %s not converted (%s); sent without Value", ref, key, type(exc).__name__)
            vr = str(getattr(ds.get_item(tag), "VR", "") or "UN") if tag in ds else "UN"
            out[key] = {"vr": vr if vr in _JSON_VRS else "UN"}
    return out


def _too_big(raw, budget: _Budget) -> bool:
    value = getattr(raw, "value", None)
    if isinstance(value, (bytes, bytearray, memoryview)):  # still raw: measure without parsing
        data = bytes(value)
        return len(data) > MAX_SEQUENCE_BYTES or data.count(_ITEM_TAG) > budget.items
    try:
        return len(value) > budget.items
    except TypeError:
        return False


def _json_safe(values) -> bool:
    if values is None:
        return True
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            return False
    return True


_JSON_VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV",
             "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"}
