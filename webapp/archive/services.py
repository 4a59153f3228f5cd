"""Archive workflows: the one ingest path every entry point uses, batches, series preparation.

Entry points (browser upload, the ``import_dicom`` command, STOW-RS later) all call
``ingest_stream`` / ``ingest_upload`` / ``ingest_path`` inside an ``UploadBatch`` and end with
``finish_batch``. A file is either stored whole (file renamed into place and its rows committed in
one transaction) or rejected with a reason and leaves nothing behind.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from ml import volumes
from webapp import jobs
from webapp.accounts.services import audit

from . import zipsafe
from .dicomfile import (
    DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    InvalidDicom,
    ParsedDicom,
    parse_dicom,
)
from .deflated import inflate_deflated, is_deflated
from . import quarantine
from .identity import IdentityMismatch, check_identity
from .models import Instance, ReviewStatus, Series, Study, UploadBatch, UploadItem
from .rendering import thumbnail_png
from .storage import archive_storage

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
STAGE_GROUP = 64  # files staged, then made durable together
PREAMBLE_BYTES = 128  # zeroed in every stored file
# Modalities whose (non-localizer) images in one series must share one geometry. MR is left out:
# a 3-plane localizer or a multi-orientation series is normal there.
VOLUME_MODALITIES = {"CT"}
GEOMETRY_FIELDS = ("rows", "columns", "pixel_spacing_row_mm", "pixel_spacing_col_mm", "image_orientation")
Outcome = UploadItem.Outcome


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file, as the uploader sees it."""

    name: str
    outcome: str
    reason: str = ""
    size: int = 0
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    series_id: int | None = field(default=None, repr=False)
    instance_id: int | None = field(default=None, repr=False)
    failure_code: int | None = field(default=None, repr=False)  # DICOM FailureReason when rejected
    sop_class_uid: str = field(default="", repr=False)

    def as_dict(self) -> dict:
        """The uploader's view: names, outcome, reason and UIDs (no database ids)."""
        data = asdict(self)
        for internal in ("series_id", "instance_id", "failure_code", "sop_class_uid"):
            del data[internal]
        return data


# --- batches ------------------------------------------------------------------------------------


def start_batch(user, source: str = UploadBatch.Source.BROWSER, *, request=None) -> UploadBatch:
    batch = UploadBatch.objects.create(created_by=user if getattr(user, "pk", None) else None, source=source)
    audit(user, "archive.upload.started", obj=batch, details={"source": source}, request=request)
    return batch


def finish_batch(batch: UploadBatch, *, actor=None, request=None) -> dict:
    """Close a batch: its series are complete, so they are queued for preparation.

    Idempotent: finishing a finished batch returns the same summary and queues nothing new.
    """
    with transaction.atomic():
        batch = UploadBatch.objects.select_for_update().get(pk=batch.pk)
        newly_finished = batch.state == UploadBatch.State.OPEN
        if newly_finished:
            batch.state = UploadBatch.State.FINISHED
            batch.finished_at = timezone.now()
            batch.save(update_fields=["state", "finished_at"])
        summary = batch_summary(batch)
        if newly_finished:
            audit(actor, "archive.upload.finished", obj=batch, details=summary["counts"], request=request)
            for series_id in summary["series_ids"]:
                if batch.source == UploadBatch.Source.STOW and settings.SERIES_QUIET_SECONDS > 0:
                    # More of this series may come in the next request: check once it has been quiet.
                    jobs.enqueue_later_on_commit("workers.prepare_series", settings.SERIES_QUIET_SECONDS,
                                                 series_id, settings.SERIES_QUIET_SECONDS)
                else:
                    jobs.enqueue_on_commit("workers.prepare_series", series_id)
    return summary


def finish_abandoned_batches(idle_seconds: float) -> list[int]:
    """Finish open batches that received nothing for ``idle_seconds`` (a closed tab, a lost
    connection): what was stored is complete as far as anyone will send it. Returns their ids."""
    cutoff = timezone.now() - timedelta(seconds=idle_seconds)
    idle = (UploadBatch.objects.filter(state=UploadBatch.State.OPEN, created_at__lt=cutoff)
            .annotate(last_item=models.Max("items__created_at"))
            .filter(models.Q(last_item__lt=cutoff) | models.Q(last_item__isnull=True)))
    done = []
    for batch in idle:
        summary = finish_batch(batch)
        log.info("finished abandoned upload batch %s: %s", batch.pk, summary["counts"])
        done.append(batch.pk)
    return done


def batch_summary(batch: UploadBatch) -> dict:
    items = batch.items.all()
    counts = Counter(items.values_list("outcome", flat=True))
    series_ids = sorted(
        set(items.filter(series__isnull=False).values_list("series_id", flat=True))
    )
    studies = [
        {
            "study_uid": study.study_uid,
            "patient": study.patient_display_name,
            "patient_id": study.patient_id,
            "study_date": study.study_date.isoformat() if study.study_date else "",
            "description": study.description,
        }
        for study in Study.objects.filter(series__id__in=series_ids).distinct().order_by("pk")
    ]
    return {
        "batch": batch.pk,
        "state": batch.state,
        "counts": {o.value: counts.get(o.value, 0) for o in Outcome},
        "series_ids": series_ids,
        "studies": studies,
    }


# --- ingest -------------------------------------------------------------------------------------


def ingest_upload(batch: UploadBatch, uploaded, *, name: str = "", actor=None, request=None) -> list[FileOutcome]:
    """One uploaded file (Django UploadedFile): a DICOM file or a zip of them."""
    return ingest_uploads(batch, [(name, uploaded)], actor=actor, request=request)


def ingest_uploads(batch: UploadBatch, named_files, *, actor=None, request=None) -> list[FileOutcome]:
    """Uploaded files in order, as (name, UploadedFile): zips unpacked, metadata files skipped, the
    DICOM files staged and stored together."""
    outcomes: list[FileOutcome] = []
    pending: list[tuple[str, BinaryIO]] = []

    def flush():
        outcomes.extend(ingest_streams(batch, pending, actor=actor, request=request))
        pending.clear()

    for name, uploaded in named_files:
        name = name or getattr(uploaded, "name", "") or "upload"
        uploaded.seek(0)
        if reason := zipsafe.skip_reason(name):
            flush()
            outcomes.append(_record(batch, FileOutcome(name, Outcome.SKIPPED, reason, uploaded.size), actor, request))
        elif zipsafe.looks_like_zip(uploaded):
            flush()
            uploaded.seek(0)
            outcomes.extend(_ingest_zip(batch, uploaded, name, actor=actor, request=request))
        else:
            uploaded.seek(0)
            pending.append((name, uploaded))
    flush()
    return outcomes


def ingest_path(batch: UploadBatch, path: Path, *, actor=None) -> list[FileOutcome]:
    """A file, a zip, or a folder (walked recursively, in sorted order)."""
    path = Path(path)
    if path.is_dir():
        outcomes: list[FileOutcome] = []
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            outcomes.extend(ingest_path(batch, child, actor=actor))
        return outcomes
    if reason := zipsafe.skip_reason(str(path)):
        return [_record(batch, FileOutcome(str(path), Outcome.SKIPPED, reason, path.stat().st_size), actor, None)]
    with open(path, "rb") as fp:
        if zipsafe.looks_like_zip(fp):
            fp.seek(0)
            return _ingest_zip(batch, fp, str(path), actor=actor)
        fp.seek(0)
        return [ingest_stream(batch, str(path), fp, actor=actor)]


def reject(batch: UploadBatch, name: str, reason: str, *, code: int, actor=None, request=None) -> FileOutcome:
    """Record a file refused before it could be read (e.g. a STOW-RS part of the wrong type)."""
    return _record(batch, FileOutcome(name, Outcome.REJECTED, reason, failure_code=code), actor, request)


def _ingest_zip(batch, fp: BinaryIO, name: str, *, actor=None, request=None) -> list[FileOutcome]:
    try:
        entries = zipsafe.open_entries(
            fp,
            max_total_bytes=settings.ARCHIVE_MAX_ZIP_BYTES,
            max_entries=settings.ARCHIVE_MAX_ZIP_ENTRIES,
            max_ratio=settings.ARCHIVE_MAX_ZIP_RATIO,
        )
    except zipsafe.UnsafeZip as exc:
        return [_record(batch, FileOutcome(name, Outcome.REJECTED, str(exc)), actor, request)]
    outcomes = []
    for entry in entries:
        if entry.skip_reason:
            kind = Outcome.REJECTED if entry.unsafe else Outcome.SKIPPED
            outcomes.append(_record(batch, FileOutcome(f"{name}/{entry.name}", kind, entry.skip_reason, entry.size), actor, request))
    readable = [e for e in entries if not e.skip_reason]
    if not readable:
        reason = "no DICOM files in the zip" + (" (only skipped or refused entries)" if entries else "")
        outcomes.append(_record(batch, FileOutcome(name, Outcome.REJECTED, reason), actor, request))
        return outcomes
    outcomes.extend(ingest_streams(batch, _opened(name, readable), actor=actor, request=request))
    return outcomes


def _opened(prefix: str, entries) -> Iterator[tuple[str, BinaryIO]]:
    for entry in entries:
        with entry.open() as stream:
            yield f"{prefix}/{entry.name}", stream


def ingest_stream(
    batch: UploadBatch,
    name: str,
    stream: BinaryIO,
    *,
    actor=None,
    request=None,
    expected_study_uid: str | None = None,
) -> FileOutcome:
    """Validate and store one DICOM file read from ``stream``; record and return the outcome.

    ``expected_study_uid`` (STOW-RS to /studies/{uid}) refuses instances of any other study.
    """
    return ingest_streams(batch, [(name, stream)], actor=actor, request=request,
                          expected_study_uid=expected_study_uid)[0]


def ingest_streams(
    batch: UploadBatch,
    items: Iterable[tuple[str, BinaryIO]],
    *,
    actor=None,
    request=None,
    expected_study_uid: str | None = None,
) -> list[FileOutcome]:
    """Several files, in order: each is staged (spooled, hashed, validated), a group of staged
    files is made durable with one filesystem sync instead of one fsync each, then each is stored
    in its own transaction. Outcomes come back in the order of ``items``."""
    outcomes: list[FileOutcome] = []
    staged: list[_Staged] = []
    try:
        for name, stream in items:
            staged.append(_stage(name, stream, expected_study_uid))
            if len(staged) >= STAGE_GROUP:
                outcomes.extend(_commit_group_at_once(batch, staged, actor, request))
                staged = []
        outcomes.extend(_commit_group_at_once(batch, staged, actor, request))
        staged = []
    finally:
        for leftover in staged:  # an exception mid-way: no staged file survives
            Path(leftover.tmp_path).unlink(missing_ok=True)
    return outcomes


def _commit_group_at_once(batch, staged: list[_Staged], actor, request) -> list[FileOutcome]:
    """Store a staged group in one database transaction (one commit for its rows, outcomes and
    audit entries instead of several per file: a STOW-RS of 10,000 parts answers in seconds).
    Each file keeps its own savepoint, so one refusal does not undo the others. If the group fails
    as a whole, files it placed are removed again unless another request stored the instance."""
    try:
        with transaction.atomic():
            return _commit_group(batch, staged, actor, request)
    except BaseException:
        _remove_unrecorded(staged)
        raise


def _remove_unrecorded(staged: list[_Staged]) -> None:
    storage = archive_storage()
    for item in staged:
        parsed = item.parsed
        if parsed is None or item.error is not None:
            continue
        try:
            if not Instance.objects.filter(sop_uid=parsed.sop_uid).exists():
                storage.delete(f"{parsed.study_uid}/{parsed.series_uid}/{parsed.sop_uid}.dcm")
        except Exception:  # the database itself failed: a later re-send replaces the file
            log.warning("could not check instance %s after a failed group", parsed.sop_uid, exc_info=True)


@dataclass
class _Staged:
    name: str
    tmp_path: str
    size: int = 0
    sha256: str = ""
    parsed: ParsedDicom | None = None
    error: InvalidDicom | None = None


def _stage(name: str, stream: BinaryIO, expected_study_uid: str | None) -> _Staged:
    fd, tmp_path = archive_storage().incoming_file()
    staged = _Staged(name, tmp_path)
    try:
        with os.fdopen(fd, "w+b") as tmp:
            staged.size, staged.sha256 = _spool(stream, tmp, settings.ARCHIVE_MAX_FILE_BYTES)
            tmp.flush()
            if is_deflated(tmp, staged.size):
                _inflate_staged(staged, tmp)
            else:
                staged.parsed = parse_dicom(tmp, staged.size)
        if expected_study_uid and staged.parsed.study_uid != expected_study_uid:
            raise InvalidDicom(
                f"instance belongs to study {staged.parsed.study_uid}, not to {expected_study_uid} named in the request",
                DOES_NOT_MATCH_SOP_CLASS,
            )
    except InvalidDicom as exc:
        staged.error = exc
        staged.size = os.path.getsize(staged.tmp_path) if os.path.exists(staged.tmp_path) else 0
    except BaseException:
        Path(staged.tmp_path).unlink(missing_ok=True)
        raise
    return staged


def _inflate_staged(staged: _Staged, deflated: BinaryIO) -> None:
    """Replace a staged deflated file by its inflated Explicit VR Little Endian form (streamed,
    capped by its image attributes), then validate and hash that: the archive stores what every
    reader serves, and an identical re-send hashes the same."""
    fd, inflated_path = archive_storage().incoming_file()
    Path(staged.tmp_path).unlink(missing_ok=True)
    staged.tmp_path = inflated_path
    with os.fdopen(fd, "w+b") as out:
        staged.size = inflate_deflated(deflated, staged.size, out)
        out.flush()
        out.seek(0)
        digest = hashlib.sha256()
        while chunk := out.read(CHUNK):
            digest.update(chunk)
        staged.sha256 = digest.hexdigest()
        staged.parsed = parse_dicom(out, staged.size)


def _commit_group(batch, staged: list[_Staged], actor, request) -> list[FileOutcome]:
    make_durable([s.tmp_path for s in staged if s.error is None])
    outcomes = []
    for index, item in enumerate(staged):
        try:
            if item.error is not None:
                raise item.error
            outcome = _store(item.parsed, item.tmp_path, item.name, item.size, item.sha256, batch=batch)
        except InvalidDicom as exc:
            parsed = item.parsed
            outcome = FileOutcome(
                item.name, Outcome.REJECTED, str(exc), item.size,
                study_uid=parsed.study_uid if parsed else "",
                series_uid=parsed.series_uid if parsed else "",
                sop_uid=parsed.sop_uid if parsed else "",
                failure_code=exc.code,
                sop_class_uid=parsed.sop_class_uid if parsed else "",
            )
        except BaseException:
            for rest in staged[index:]:
                Path(rest.tmp_path).unlink(missing_ok=True)
            raise
        finally:
            Path(item.tmp_path).unlink(missing_ok=True)  # gone already when stored
        outcomes.append(_record(batch, outcome, actor, request))
    return outcomes


def make_durable(paths: list[str]) -> None:
    """Flush staged files to disk before their rows commit (no empty file after a power cut):
    one syncfs(2) of the archive's filesystem for the group, or an fsync per file elsewhere."""
    if not paths:
        return
    if _syncfs(os.path.dirname(paths[0])):
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _syncfs(directory: str) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(directory, os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    try:
        return getattr(libc, "syncfs", None) is not None and libc.syncfs(fd) == 0
    finally:
        os.close(fd)


def _spool(stream: BinaryIO, out: BinaryIO, limit: int) -> tuple[int, str]:
    """Copy ``stream`` to ``out`` with the 128-byte preamble zeroed (a preamble can make a DICOM
    file an executable too: CVE-2019-11687); return the size and the SHA-256 of what was written."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        if size < PREAMBLE_BYTES:
            zeroed = min(len(chunk), PREAMBLE_BYTES - size)
            chunk = b"\x00" * zeroed + chunk[zeroed:]
        size += len(chunk)
        if size > limit:
            raise InvalidDicom(f"file is larger than the limit of {limit // (1024 * 1024)} MB", OUT_OF_RESOURCES)
        digest.update(chunk)
        out.write(chunk)
    return size, digest.hexdigest()


def _store(parsed: ParsedDicom, tmp_path: str, name: str, size: int, sha256: str, *,
           batch: UploadBatch | None = None) -> FileOutcome:
    def outcome(kind, reason="", series_id=None, instance_id=None, failure_code=None):
        return FileOutcome(
            name, kind, reason, size, parsed.study_uid, parsed.series_uid, parsed.sop_uid, series_id, instance_id,
            failure_code, parsed.sop_class_uid,
        )

    existing = Instance.objects.filter(sop_uid=parsed.sop_uid).values_list("sha256", "series_id", "pk").first()
    if existing is not None:
        return _duplicate_or_conflict(existing, sha256, outcome)
    relpath = f"{parsed.study_uid}/{parsed.series_uid}/{parsed.sop_uid}.dcm"
    storage = archive_storage()
    placed = committing = False
    try:
        with transaction.atomic():
            study, study_created = _study_for(parsed)
            if study.review_status == ReviewStatus.SIGNED_OFF:
                # A signed-off read never changes under the reader: held for an admin (see quarantine).
                held = quarantine.hold(study, parsed, tmp_path, name, size, sha256, batch)
                return outcome(Outcome.QUARANTINED, held.reason)
            series = _series_for(study, parsed)
            instance = Instance.objects.create(
                series=series,
                sop_uid=parsed.sop_uid,
                sop_class_uid=parsed.sop_class_uid,
                rows=parsed.rows,
                columns=parsed.columns,
                bits_allocated=parsed.bits_allocated,
                samples_per_pixel=parsed.samples_per_pixel,
                number_of_frames=parsed.number_of_frames,
                transfer_syntax_uid=parsed.transfer_syntax_uid,
                pixel_data_offset=parsed.pixel_data_offset,
                pixel_data_length=parsed.pixel_data_length,
                file_path=relpath,
                file_size=size,
                sha256=sha256,
                **parsed.instance,
            )
            if study_created:
                audit(None, "archive.study.created", obj=study, details={"patient_id": study.patient_id})
            # Last step: the file appears with its rows. Our uncommitted row holds the unique SOP UID,
            # so no other request can own this path while we may still have to remove it.
            placed = True
            storage.commit_incoming(tmp_path, relpath)
            committing = True  # an error from here on is the COMMIT's: it may have happened (connection lost)
    except IdentityMismatch as exc:
        # The sender is told which attributes differ, never the stored values; admins get the ids.
        log.warning("identity mismatch: instance %s for study %s (%s)", parsed.sop_uid, parsed.study_uid, ", ".join(exc.fields))
        audit(batch.created_by if batch is not None else None, "archive.instance.identity_mismatch",
              object_type="study", object_id=parsed.study_uid,
              details={"sop_uid": parsed.sop_uid, "series_uid": parsed.series_uid, "fields": exc.fields,
                       "batch": batch.pk if batch is not None else None})
        raise
    except IntegrityError:
        # Another request stored the same instance between our check and our insert (the insert
        # fails before our file is placed, so the other request's file is left alone).
        existing = Instance.objects.filter(sop_uid=parsed.sop_uid).values_list("sha256", "series_id", "pk").first()
        if existing is None:
            raise
        return _duplicate_or_conflict(existing, sha256, outcome)
    except BaseException:
        # Remove our file only when the row surely did not commit: deleting it after a commit whose answer
        # was lost (database restarted) would leave a row without its file; a stray file is harmless
        # (the client's retry stores the row or finds it).
        if placed and not committing:
            storage.delete(relpath)
        raise
    return outcome(Outcome.STORED, series_id=series.pk, instance_id=instance.pk)


def _duplicate_or_conflict(existing: tuple[str, int, int], sha256: str, outcome) -> FileOutcome:
    existing_sha, series_id, instance_id = existing
    if existing_sha == sha256:
        return outcome(Outcome.DUPLICATE, "identical instance already stored", series_id, instance_id)
    return outcome(
        Outcome.REJECTED,
        "an instance with this SOP Instance UID is already stored with different content",
        failure_code=PROCESSING_FAILURE,
    )


def _study_for(parsed: ParsedDicom) -> tuple[Study, bool]:
    """The study the instance joins (created by its first instance). An existing study's row is
    locked, so a sign-off cannot slip between this check and the instance's commit, and the
    instance's patient identity must match it (:mod:`.identity`; the refusal does not reveal the
    stored patient)."""
    study, created = Study.objects.get_or_create(study_uid=parsed.study_uid, defaults=parsed.study)
    if not created:
        study = Study.objects.select_for_update().get(pk=study.pk)
        check_identity(study, parsed.study)
    return study, created


def _series_for(study: Study, parsed: ParsedDicom) -> Series:
    """The series row for this file. A CT image whose geometry differs from its series is stored
    whole all the same: ``prepare_series`` flags the series (``geometry_warnings``) and the volume
    builder leaves the odd image out or refuses the volume with the reason."""
    _keep_image_geometry(parsed)
    series, created = Series.objects.get_or_create(
        series_uid=parsed.series_uid, defaults={"study": study, **parsed.series}
    )
    if created:
        return series
    if series.study_id != study.pk:
        raise InvalidDicom(f"series {parsed.series_uid} already belongs to another study", DOES_NOT_MATCH_SOP_CLASS)
    if series.modality != parsed.series["modality"]:
        raise InvalidDicom(
            f"inconsistent series: modality {parsed.series['modality']!r}, the series is {series.modality!r}",
            DOES_NOT_MATCH_SOP_CLASS,
        )
    if series.modality in VOLUME_MODALITIES and not parsed.is_localizer:
        problems = _geometry_conflicts(series, parsed.series)
        if problems and not series.instances.exclude(image_type__icontains="LOCALIZER").exists():
            # The series so far holds only localizers: its geometry comes from this first slice.
            for field in GEOMETRY_FIELDS:
                setattr(series, field, parsed.series[field])
            series.save(update_fields=[*GEOMETRY_FIELDS, "updated_at"])
        elif problems:
            log.info("series %s: image %s stored with a differing geometry (%s); flagged when prepared",
                     series.pk, parsed.sop_uid, "; ".join(problems))
    return series


def _keep_image_geometry(parsed: ParsedDicom) -> None:
    """Each image keeps its own PixelSpacing and FrameOfReferenceUID (the series row has the first
    image's); JSON columns get None for non-finite values (PostgreSQL's jsonb refuses NaN), which the
    geometry checks report as missing or not finite."""
    def finite_or_none(values):
        return values if values is not None and all(np.isfinite(v) for v in values) else None

    row, col = parsed.series.get("pixel_spacing_row_mm"), parsed.series.get("pixel_spacing_col_mm")
    parsed.instance["pixel_spacing_mm"] = finite_or_none([row, col]) if row is not None and col is not None else None
    parsed.instance["frame_of_reference_uid"] = parsed.series.get("frame_of_reference_uid", "")
    parsed.instance["image_orientation"] = finite_or_none(parsed.instance.get("image_orientation"))
    parsed.series["image_orientation"] = finite_or_none(parsed.series.get("image_orientation"))


def _geometry_conflicts(series: Series, new: dict) -> list[str]:
    problems = []
    if (series.rows, series.columns) != (new["rows"], new["columns"]):
        problems.append(f"matrix {new['rows']}×{new['columns']}, the series is {series.rows}×{series.columns}")
    for field, label in (("pixel_spacing_row_mm", "row spacing"), ("pixel_spacing_col_mm", "column spacing")):
        a, b = getattr(series, field), new[field]
        if a is not None and b is not None and not abs(a - b) <= 1e-3:
            problems.append(f"{label} {b} mm, the series has {a} mm")
    a, b = series.image_orientation, new["image_orientation"]
    if a and b and max(abs(x - y) for x, y in zip(a, b)) > 1e-3:
        problems.append("a different ImageOrientationPatient")
    if series.frame_of_reference_uid != new.get("frame_of_reference_uid", series.frame_of_reference_uid):
        problems.append("another FrameOfReferenceUID")
    return problems


def _record(batch: UploadBatch | None, outcome: FileOutcome, actor, request) -> FileOutcome:
    if actor is None and batch is not None:
        actor = batch.created_by
    if batch is not None:
        UploadItem.objects.create(
            batch=batch,
            name=outcome.name[:1024],
            size=outcome.size,
            outcome=outcome.outcome,
            reason=outcome.reason,
            series_id=outcome.series_id,
            instance_id=outcome.instance_id,
        )
    if outcome.outcome == Outcome.REJECTED:
        # The file name may carry a patient's name (an exported folder): the log gets ids only.
        log.info("rejected a file of upload batch %s: %s", batch.pk if batch is not None else "-", outcome.reason)
        audit(
            actor,
            "archive.upload.file_rejected",
            object_type="upload",
            object_id=str(batch.pk) if batch else "",
            details={"file": outcome.name[:500], "reason": outcome.reason},
            request=request,
        )
    return outcome


# --- series preparation -------------------------------------------------------------------------


def series_still_arriving(series_id: int, quiet_seconds: float) -> bool:
    """True when an instance of the series arrived less than ``quiet_seconds`` ago."""
    last = Instance.objects.filter(series_id=series_id).aggregate(last=models.Max("created_at"))["last"]
    return last is not None and (timezone.now() - last).total_seconds() < quiet_seconds - 0.5


def prepare_series(series_id: int) -> Series:
    """Check and measure the series geometry from its instances (``geometry_warnings``, slice
    spacing, the majority's matrix, pixel spacing and orientation) and render its thumbnail.
    Safe to repeat."""
    series = Series.objects.select_related("study").get(pk=series_id)
    instances = list(series.instances.order_by("instance_number", "pk"))
    if not instances:
        return series
    plan, warnings = volumes.assess_geometry([image_geometry(i) for i in instances], **volume_caps())
    fields: dict = {"geometry_warnings": warnings, "slice_spacing_mm": None}
    if plan is not None:
        ordered = [instances[i] for i in plan.order]
        first = ordered[0]
        if len(ordered) > 1:
            fields["slice_spacing_mm"] = plan.spacing_zyx_mm[0]
        fields.update(rows=plan.shape_zyx[1], columns=plan.shape_zyx[2], pixel_spacing_row_mm=plan.spacing_zyx_mm[1],
                      pixel_spacing_col_mm=plan.spacing_zyx_mm[2], image_orientation=first.image_orientation,
                      frame_of_reference_uid=first.frame_of_reference_uid or series.frame_of_reference_uid)
    else:
        ordered = instances
    if warnings:
        log.warning("series %s geometry: %s", series.pk, " ".join(warnings))
    # The flags are kept even when the thumbnail below cannot be rendered (the caller sees that error).
    Series.objects.filter(pk=series.pk).update(**fields)
    middle = ordered[len(ordered) // 2]
    storage = archive_storage()
    png = thumbnail_png(storage.path(middle.file_path))
    thumb_name = f"thumbnails/{series.series_uid}.png"
    storage.save(thumb_name, ContentFile(png))
    Series.objects.filter(pk=series.pk).update(thumbnail=thumb_name, prepared_at=timezone.now())
    series.refresh_from_db()
    return series


def volume_caps() -> dict:
    """The largest grid built from a series (settings ``VOLUME_MAX_SLICES`` / ``VOLUME_MAX_VOXELS``),
    the same for the flags, the viewer's grid and the AI's volume."""
    return {"max_slices": settings.VOLUME_MAX_SLICES, "max_voxels": settings.VOLUME_MAX_VOXELS}


def image_geometry(instance: Instance) -> volumes.SliceGeometry:
    """The grid rule's view of a stored image (see ``ml.volumes.plan_grid``)."""
    position = (instance.position_x_mm, instance.position_y_mm, instance.position_z_mm)
    return volumes.SliceGeometry(
        position_xyz_mm=None if None in position else position,
        orientation=tuple(instance.image_orientation) if instance.image_orientation else None,
        pixel_spacing_mm=tuple(instance.pixel_spacing_mm) if instance.pixel_spacing_mm else None,
        rows=instance.rows,
        columns=instance.columns,
        frame_of_reference_uid=instance.frame_of_reference_uid,
        frames=instance.number_of_frames,
        localizer="LOCALIZER" in (instance.image_type or "").upper().split("\\"),
    )


def sort_along_normal(instances: Iterable[Instance]) -> tuple[list[Instance], float | None, list[str]]:
    """Instances sorted by position along the (normalised) slice normal, the median spacing (mm),
    and notes. Falls back to InstanceNumber when positions or orientation are missing or not finite."""
    instances = list(instances)
    notes: list[str] = []
    by_number = sorted(instances, key=lambda i: (i.instance_number or 0, i.pk))
    positions = np.array([[i.position_x_mm, i.position_y_mm, i.position_z_mm] for i in instances], dtype=float).reshape(-1, 3)
    try:
        normal = volumes.unit_direction(by_number[0].image_orientation if instances else None)[:, 2]
    except volumes.SeriesError:
        normal = None
    if normal is None or not np.all(np.isfinite(positions)):
        notes.append("no finite ImagePositionPatient/ImageOrientationPatient on every image: ordered by InstanceNumber")
        return by_number, None, notes
    distance = {i.pk: float(p @ normal) for i, p in zip(instances, positions)}
    ordered = sorted(instances, key=lambda i: (distance[i.pk], i.instance_number or 0))
    if len(ordered) < 2:
        return ordered, None, notes
    steps = np.diff([distance[i.pk] for i in ordered])
    moving = steps[steps >= volumes.DUPLICATE_TOLERANCE_MM]
    spacing = float(np.median(moving)) if moving.size else None
    duplicates = int(np.sum(steps < volumes.DUPLICATE_TOLERANCE_MM))
    if duplicates:
        notes.append(f"{duplicates} image(s) share a position with another image")
    return ordered, spacing, notes
