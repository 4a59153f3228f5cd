"""The quarantine: instances that arrive for a study whose read is signed off.

A signed-off read must not change under the reader, so such a file is never merged silently. Every
door (browser upload, zip, STOW-RS, the import command) goes through ``services._store``, which
calls :func:`hold`: the file moves to the quarantine folder (``ARCHIVE_QUARANTINE_DIR``, default
``MEDIA_ROOT/quarantine``, outside the archive storage that is served), one
:class:`QuarantinedInstance` row records when, from whom, through which door, for which study and
why, and no ``Instance`` row exists. The sender is told "quarantined: ..." (STOW-RS: 202 with the
reason, see ``webapp.dicomweb.stow``).

An admin then, on ``/quarantine/``:
- **releases** it (:func:`release`): the case is reopened (audited ``review.case.reopened`` with the
  reason, and the case's notice tells the assignee), the file is stored through the normal ingest
  path (same checks, identity included) and its series is prepared again; or
- **discards** it (:func:`discard`): the file is deleted, the row kept as the record.
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from webapp import jobs
from webapp.accounts.services import audit

from .models import QuarantinedInstance, Study, UploadBatch

log = logging.getLogger(__name__)
State = QuarantinedInstance.State


class QuarantineError(Exception):
    """A release or discard that cannot be done; the message says why."""


def quarantine_root() -> Path:
    root = getattr(settings, "ARCHIVE_QUARANTINE_DIR", None) or Path(settings.MEDIA_ROOT) / "quarantine"
    return Path(root)


def reason_for(study: Study) -> str:  # noqa: ARG001 (the sender knows the study; nothing else is told)
    return ("quarantined: the study was signed off; this instance is held for an administrator to review "
            "and was not added to the study")


def hold(study: Study, parsed, tmp_path: str, name: str, size: int, sha256: str,
         batch: UploadBatch | None) -> QuarantinedInstance:
    """Keep a staged file for ``study`` (signed off) in quarantine. Runs inside the ingest
    transaction; the file moves last, so a failure before leaves no file. The same file sent again
    is held once (the staged copy is then left for the caller to remove)."""
    same = QuarantinedInstance.objects.filter(sop_uid=parsed.sop_uid, sha256=sha256, state=State.HELD).first()
    if same is not None:
        return same
    relpath = f"{parsed.study_uid}/{uuid.uuid4().hex}.dcm"
    row = QuarantinedInstance.objects.create(
        study=study, study_uid=parsed.study_uid, series_uid=parsed.series_uid, sop_uid=parsed.sop_uid,
        sha256=sha256, file_path=relpath, file_name=name[:1024], file_size=size, reason=reason_for(study)[:500],
        source=batch.source if batch is not None else "", batch=batch,
        received_from=batch.created_by if batch is not None else None,
    )
    audit(row.received_from, "archive.quarantine.held", obj=row,
          details={"study": parsed.study_uid, "series": parsed.series_uid, "sop_uid": parsed.sop_uid,
                   "source": row.source, "batch": batch.pk if batch is not None else None})
    final = quarantine_root() / relpath
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(tmp_path, 0o600)
    shutil.move(tmp_path, final)
    return row


def held() -> list[QuarantinedInstance]:
    return list(QuarantinedInstance.objects.filter(state=State.HELD)
                .select_related("study", "received_from", "batch").order_by("-created_at", "-pk"))


def release(item_id: int, *, actor, request=None) -> dict:
    """Merge a held file into its study: reopen the case (audited, the assignee told through the
    case's notice), store the file through the normal ingest checks, prepare its series again.
    Returns ``{"outcome", "reason", "reopened"}``; raises QuarantineError when it cannot be done
    (then nothing changed)."""
    from webapp.review.services import reopen_for_new_images

    from . import services
    from .dicomfile import InvalidDicom, parse_dicom

    storage = services.archive_storage()
    with transaction.atomic():
        item = _locked_held(item_id)
        path = quarantine_root() / item.file_path
        if not path.exists():
            raise QuarantineError("the quarantined file is missing from the quarantine folder; discard this entry")
        # A copy goes through the normal store path (it moves its temporary file into the archive).
        fd, tmp_path = storage.incoming_file()
        try:
            with os.fdopen(fd, "w+b") as tmp, open(path, "rb") as src:
                shutil.copyfileobj(src, tmp)
                tmp.flush()
                parsed = parse_dicom(tmp, item.file_size)
            services.make_durable([tmp_path])
            study = Study.objects.get(pk=item.study_id)
            when = timezone.localdate().strftime("%Y-%m-%d")
            result = reopen_for_new_images(
                study, actor, request=request,
                reason=f"quarantined instance {item.pk} released into the study (series {item.series_uid})",
                notice=(f"Reopened on {when}: {actor.get_username()} added an image that arrived after sign-off. "
                        "Review it and sign off again."),
            )
            stored = services._store(parsed, tmp_path, item.file_name, item.file_size, item.sha256)
            if stored.outcome not in (services.Outcome.STORED, services.Outcome.DUPLICATE):
                raise QuarantineError(f"the instance could not be stored: {stored.reason}")
        except InvalidDicom as exc:
            raise QuarantineError(f"the instance could not be stored: {exc}") from None
        finally:
            Path(tmp_path).unlink(missing_ok=True)
        item.state, item.decided_by, item.decided_at = State.RELEASED, actor, timezone.now()
        item.decision_note = ("added to the study" if stored.outcome == services.Outcome.STORED
                              else "the study already held this instance")
        item.save(update_fields=["state", "decided_by", "decided_at", "decision_note"])
        audit(actor, "archive.quarantine.released", obj=item, request=request,
              details={"study": item.study_uid, "sop_uid": item.sop_uid, "outcome": stored.outcome,
                       "reopened": result is not None})
        if stored.series_id is not None:
            jobs.enqueue_on_commit("workers.prepare_series", stored.series_id)
        transaction.on_commit(lambda: path.unlink(missing_ok=True))
    return {"outcome": stored.outcome, "reason": stored.reason, "reopened": result is not None}


def discard(item_id: int, *, actor, note: str = "", request=None) -> None:
    """Delete a held file; the row stays as the record of what arrived and who decided."""
    with transaction.atomic():
        item = _locked_held(item_id)
        item.state, item.decided_by, item.decided_at = State.DISCARDED, actor, timezone.now()
        item.decision_note = note[:500]
        item.save(update_fields=["state", "decided_by", "decided_at", "decision_note"])
        audit(actor, "archive.quarantine.discarded", obj=item, request=request,
              details={"study": item.study_uid, "sop_uid": item.sop_uid, "note": note[:500]})
        path = quarantine_root() / item.file_path
        transaction.on_commit(lambda: path.unlink(missing_ok=True))


def _locked_held(item_id: int) -> QuarantinedInstance:
    item = QuarantinedInstance.objects.select_for_update().filter(pk=item_id).first()
    if item is None:
        raise QuarantineError("no such quarantined instance")
    if item.state != State.HELD:
        raise QuarantineError(f"this instance was already {item.get_state_display().lower()}")
    return item
