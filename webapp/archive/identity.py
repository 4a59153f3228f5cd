"""Patient identity of an arriving instance against the study it joins.

Compared on every instance, as dcm4chee and Orthanc do before they merge an instance into a stored
study. The four attributes and how they are normalised before comparing:

- PatientID: surrounding spaces removed (DICOM pads to even length), case kept (IDs are codes;
  ``ab12`` and ``AB12`` may be different patients). Always compared: an empty ID against a stored
  one (or the reverse) is a mismatch.
- PatientName: the alphabetic group only (before the first ``=``), split on ``^`` into family,
  given, middle, prefix, suffix; each part stripped of spaces, inner runs of spaces collapsed,
  case-folded; trailing empty parts dropped. ``DOE^JOHN^^^`` equals ``Doe^John``.
- PatientBirthDate: the date (``YYYYMMDD``) as parsed at ingest.
- PatientSex: stripped, upper case.
Name, birth date and sex are compared when both sides have a value (a missing value is not a
different patient).

A mismatch is refused with a reason that names the attributes that differ, never their stored
values: the sender must not learn who else is in the archive. Admins find the ids in the audit
log (``archive.instance.identity_mismatch``).
"""
from __future__ import annotations

from .dicomfile import DOES_NOT_MATCH_SOP_CLASS, InvalidDicom

FIELDS = (("patient_id", "PatientID"), ("patient_name", "PatientName"),
          ("patient_birth_date", "PatientBirthDate"), ("patient_sex", "PatientSex"))


class IdentityMismatch(InvalidDicom):
    """The file's patient is not the study's. ``fields``: DICOM keywords that differ."""

    def __init__(self, study_uid: str, fields: list[str]):
        super().__init__(
            f"refused: the patient identity in this file ({', '.join(fields)}) does not match the patient "
            f"study {study_uid} is stored for; nothing was stored. Check that the file belongs to this study; "
            "an administrator can see the details.",
            DOES_NOT_MATCH_SOP_CLASS,
        )
        self.study_uid = study_uid
        self.fields = fields


def normalised_id(value) -> str:
    return str(value or "").strip()


def normalised_name(value) -> str:
    alphabetic = str(value or "").split("=")[0]
    parts = [" ".join(p.split()).casefold() for p in alphabetic.split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts)


def normalised_sex(value) -> str:
    return str(value or "").strip().upper()


def mismatched_fields(stored: dict, incoming: dict) -> list[str]:
    """DICOM keywords of the identity attributes on which ``incoming`` differs from ``stored``
    (both dicts with the Study model's field names)."""
    differ = []
    if normalised_id(stored.get("patient_id")) != normalised_id(incoming.get("patient_id")):
        differ.append("PatientID")
    pairs = (
        ("PatientName", normalised_name(stored.get("patient_name")), normalised_name(incoming.get("patient_name"))),
        ("PatientBirthDate", stored.get("patient_birth_date"), incoming.get("patient_birth_date")),
        ("PatientSex", normalised_sex(stored.get("patient_sex")), normalised_sex(incoming.get("patient_sex"))),
    )
    for keyword, a, b in pairs:
        if a and b and a != b:
            differ.append(keyword)
    return differ


def check_identity(study, incoming: dict) -> None:
    """Raise :class:`IdentityMismatch` when ``incoming`` (ParsedDicom.study) is another patient."""
    stored = {name: getattr(study, name) for name, _ in FIELDS}
    fields = mismatched_fields(stored, incoming)
    if fields:
        raise IdentityMismatch(study.study_uid, fields)

