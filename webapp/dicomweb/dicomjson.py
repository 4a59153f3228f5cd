"""DICOM JSON (PS3.18 F.2) values for attributes that live in database rows."""
from __future__ import annotations

import datetime as dt

from django.conf import settings
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from webapp.archive.dicomfile import check_uid, InvalidDicom

from .errors import bad_request


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
    if vr == "PN":
        values = [{"Alphabetic": str(v)} for v in values]
    elif vr == "DA":
        values = [v.strftime("%Y%m%d") if isinstance(v, dt.date) else str(v) for v in values]
    elif vr == "TM":
        values = [v.strftime("%H%M%S") if isinstance(v, dt.time) else str(v) for v in values]
    elif vr in ("IS", "US", "UL", "SS", "SL"):
        values = [int(v) for v in values]
    elif vr in ("DS", "FL", "FD"):
        values = [float(v) for v in values]
    else:
        values = [str(v) for v in values]
    item["Value"] = values
    return f"{tag:08X}", item


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
