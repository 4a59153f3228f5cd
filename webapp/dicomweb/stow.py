"""STOW-RS (PS3.18 §10.5): multipart/related bodies into the archive's one ingest service.

The body is spooled to a temporary file as it arrives (never held in memory; chunked
transfer-encoding read straight from the server's decoded input), then split into parts with
mmap, and each part goes through ``ingest_stream`` like a browser upload.
"""
from __future__ import annotations

import mmap
import re
import tempfile
from dataclasses import dataclass

from django.conf import settings

from webapp.archive import services
from webapp.archive.models import UploadBatch
from webapp.archive.services import FileOutcome

from . import dicomjson
from .errors import DicomWebError, bad_request

CHUNK = 1024 * 1024
BOUNDARY_RE = re.compile(r'boundary="?([^";]+)"?', re.I)
TYPE_RE = re.compile(r'type="?([^";]+)"?', re.I)
CANNOT_UNDERSTAND = 0xC000


@dataclass
class Part:
    start: int
    end: int
    content_type: str


class RangeReader:
    """A read-only file-like view of [start, end) of an mmap."""

    def __init__(self, buffer: mmap.mmap, start: int, end: int):
        self.buffer, self.pos, self.end = buffer, start, end

    def read(self, size: int = -1) -> bytes:
        stop = self.end if size is None or size < 0 else min(self.end, self.pos + size)
        data = self.buffer[self.pos : stop]
        self.pos = stop
        return data


def check_content_type(header: str) -> str:
    """The boundary of a multipart/related; type="application/dicom" body; 415/400 otherwise."""
    if not header.lower().startswith("multipart/related"):
        raise DicomWebError(415, 'STOW-RS takes multipart/related; type="application/dicom" bodies')
    part_type = TYPE_RE.search(header)
    if part_type and part_type.group(1).lower() != "application/dicom":
        raise DicomWebError(415, f"only application/dicom parts are accepted, not {part_type.group(1)}")
    boundary = BOUNDARY_RE.search(header)
    if not boundary:
        raise bad_request("the Content-Type has no boundary parameter")
    return boundary.group(1)


def spool_body(request, limit: int):
    """Copy the request body to a temporary file, at most ``limit`` bytes (413 beyond)."""
    stream = request
    if request.META.get("wsgi.input_terminated") and not request.META.get("CONTENT_LENGTH"):
        stream = request.META["wsgi.input"]  # chunked: the server has decoded it, read to EOF
    spool = tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR)
    size = 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise DicomWebError(413, f"request body over the limit of {limit // 2**20} MB")
        spool.write(chunk)
    spool.flush()
    return spool, size


def split_parts(buffer: mmap.mmap, boundary: str) -> list[Part]:
    delimiter = b"--" + boundary.encode()
    first = buffer.find(delimiter)
    if first < 0:
        raise bad_request("the body does not contain the boundary given in the Content-Type")
    parts, pos = [], first + len(delimiter)
    while True:
        if buffer[pos : pos + 2] == b"--":
            return parts  # closing delimiter
        head_end = buffer.find(b"\r\n\r\n", pos)
        if head_end < 0:
            raise bad_request("malformed multipart body: a part has no header/body separator")
        headers = buffer[pos:head_end].decode("latin-1")
        body_start = head_end + 4
        next_delim = buffer.find(b"\r\n" + delimiter, body_start)
        if next_delim < 0:
            raise bad_request("malformed multipart body: the closing boundary is missing")
        match = re.search(r"^content-type:\s*([^\r\n]+)", headers, re.I | re.M)
        parts.append(Part(body_start, next_delim, match.group(1).strip() if match else ""))
        pos = next_delim + 2 + len(delimiter)


def store(request, *, study_uid: str | None) -> tuple[int, dict]:
    """Run a STOW-RS request; returns (HTTP status, DICOM JSON response)."""
    boundary = check_content_type(request.META.get("CONTENT_TYPE", ""))
    spool, size = spool_body(request, settings.DICOMWEB_MAX_STOW_BYTES)
    with spool:
        if size == 0:
            raise bad_request("empty request body")
        buffer = mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            parts = split_parts(buffer, boundary)
            if not parts:
                raise bad_request("the multipart body holds no parts")
            batch = services.start_batch(request.user, UploadBatch.Source.STOW, request=request)
            outcomes = _store_parts(batch, request, buffer, parts, study_uid)
        finally:
            buffer.close()
    services.finish_batch(batch, actor=request.user, request=request)
    return _response(outcomes, study_uid)


def _store_parts(batch, request, buffer, parts: list[Part], study_uid: str | None) -> list[FileOutcome]:
    """Parts in order: wrong part types are refused, DICOM parts staged and stored together."""
    outcomes: list[FileOutcome] = []
    pending = []

    def flush():
        outcomes.extend(services.ingest_streams(batch, pending, actor=request.user, request=request,
                                                expected_study_uid=study_uid))
        pending.clear()

    for index, part in enumerate(parts):
        name = f"part {index + 1}"
        kind = part.content_type.split(";")[0].strip().lower()
        if kind and kind != "application/dicom":
            flush()
            outcomes.append(services.reject(batch, name, f"part Content-Type {kind} is not application/dicom",
                                            code=CANNOT_UNDERSTAND, actor=request.user, request=request))
        else:
            pending.append((name, RangeReader(buffer, part.start, part.end)))
    flush()
    return outcomes


def _response(outcomes: list[FileOutcome], study_uid: str | None) -> tuple[int, dict]:
    base = dicomjson.base_url()
    stored = [o for o in outcomes if o.outcome in ("stored", "duplicate")]
    # Quarantined (the study's read is signed off): accepted and held for an admin, not retrievable.
    # Listed with the accepted instances but without a RetrieveURL, the reason as ErrorComment; 202.
    held = [o for o in outcomes if o.outcome == "quarantined"]
    failed = [o for o in outcomes if o.outcome not in ("stored", "duplicate", "quarantined")]
    body: dict = {}
    studies = {o.study_uid for o in stored}
    if len(studies) == 1 or study_uid:
        body.update(dicomjson.dataset(RetrieveURL=f"{base}/studies/{study_uid or studies.pop()}"))
    if stored or held:
        body["00081199"] = {"vr": "SQ", "Value": [
            dicomjson.dataset(
                ReferencedSOPClassUID=o.sop_class_uid,
                ReferencedSOPInstanceUID=o.sop_uid,
                RetrieveURL=f"{base}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}",
            )
            for o in stored
        ] + [
            {**dicomjson.dataset(ReferencedSOPClassUID=o.sop_class_uid, ReferencedSOPInstanceUID=o.sop_uid),
             "00000902": {"vr": "LO", "Value": ["quarantined: study signed off; held for an admin"]}}
            for o in held
        ]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {
                **dicomjson.dataset(ReferencedSOPClassUID=o.sop_class_uid, ReferencedSOPInstanceUID=o.sop_uid,
                                    FailureReason=o.failure_code or CANNOT_UNDERSTAND),
                "00000902": {"vr": "LO", "Value": [o.reason[:64]]},  # ErrorComment: the reason in words
            }
            for o in failed
        ]}
    status = 202 if held else 200 if not failed else 409 if not stored else 202
    return status, body
