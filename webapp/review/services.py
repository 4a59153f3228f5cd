"""Findings workflows. AI findings of a (series, model version) are replaced as a whole; findings a
radiologist has touched (any status but proposed, source radiologist, or any review revision) are
never removed, and a signed-off case takes no AI findings at all. The review actions on a case
follow below, one function each.

Who may do what (admin is an IT role, not a clinical one):
- change findings or the case comment: radiologists (an admin only when also a radiologist);
- sign off: the assignee; any radiologist while the case is unassigned;
- reopen: the radiologist who signed it off or its assignee; an admin (or another radiologist who is
  also an admin) only with a written reason, which goes into the audit log and the case's notice;
- assign: admins assign anyone; a radiologist takes a free case or gives back their own."""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp import jobs
from webapp.accounts.models import Role
from webapp.accounts.services import audit, can_read_studies, has_role, is_admin
from webapp.archive.models import ReviewStatus, Series, Study

from .geometry import GeometryError, decode_mask, measure_mask, series_grid, tight
from .models import CaseReview, Finding, ReviewRevision
from .payloads import BadInput, Conflict, Forbidden, NotFound, case_json, finding_json

RETRAIN_CHECK_TASK = "workers.request_retraining"


class CaseSignedOff(Exception):
    """AI findings arrived for a signed-off case: nothing was stored."""


@transaction.atomic
def replace_ai_findings(run, findings, volume=None) -> int:
    """Store ``findings`` (ml.inference.Finding) for ``run``; returns how many were stored.
    ``volume``: the ``ml.volumes.Volume`` the findings were predicted on (their masks are anchored
    in patient space on its grid).

    The run's proposals replace every untouched AI proposal on the series, whichever model made it:
    after a new champion re-reads a study the reader sees one model's proposals, not two overlapping
    sets. Findings a radiologist decided on or touched (any revision) are kept. A signed-off case is
    never changed: under the case's row lock (the one sign-off takes) this raises
    :class:`CaseSignedOff` and stores nothing."""
    series = run.series
    _ensure_case_row(series.study)
    CaseReview.objects.select_for_update(of=("self",)).filter(study_id=series.study_id).first()
    if Study.objects.filter(pk=series.study_id, review_status=ReviewStatus.SIGNED_OFF).exists():
        raise CaseSignedOff(f"the case of study {series.study.study_uid} is signed off; AI findings were not stored")
    Finding.objects.filter(
        series=series, source=Finding.Source.AI, status=Finding.Status.PROPOSED, revisions__isnull=True,
    ).delete()
    touched = Finding.objects.filter(series=series, revisions__isnull=False).values("pk")
    decided = list(Finding.objects.filter(series=series).exclude(status=Finding.Status.PROPOSED)
                   | Finding.objects.filter(pk__in=touched))
    rows = []
    for f in findings:
        if any(_same_nodule(f, d) for d in decided):
            continue  # a radiologist already decided about this nodule
        row = Finding(
            study_id=series.study_id,
            series=series,
            source=Finding.Source.AI,
            inference_run=run,
            model_version=run.model_version,
            centre_x_mm=float(f.centre_xyz_mm[0]),
            centre_y_mm=float(f.centre_xyz_mm[1]),
            centre_z_mm=float(f.centre_xyz_mm[2]),
            bbox_min_xyz_mm=[float(v) for v in f.bbox_min_xyz_mm],
            bbox_max_xyz_mm=[float(v) for v in f.bbox_max_xyz_mm],
            diameter_mm=float(f.diameter_mm),
            long_axis_mm=float(f.long_axis_mm),
            short_axis_mm=float(f.short_axis_mm),
            volume_ml=float(f.volume_ml),
            mean_hu=float(f.mean_hu),
            score=float(f.score),
            flagged=bool(getattr(f, "flagged", True)),
            uncertainty=None if f.uncertainty is None else float(f.uncertainty),
        )
        row.set_mask(f.mask, f.mask_origin_zyx, volume)
        rows.append(row)
    Finding.objects.bulk_create(rows)
    return len(rows)


def _same_nodule(new, finding: Finding) -> bool:
    """Centres closer than the larger radius: the same lesion."""
    distance = np.linalg.norm(np.subtract(new.centre_xyz_mm, finding.centre_xyz_mm))
    return distance < max(new.diameter_mm, finding.diameter_mm) / 2


# --- the review of a case: one function per action ------------------------------------------------
#
# Each action runs in one transaction: lock the case row (select_for_update), check the client's
# base revision and the sign-off state, change the finding or case, append one ReviewRevision
# (revision = old + 1, before/after JSON), keep Study.review_status in step, write the audit entry.


@dataclass
class ActionResult:
    revision: int
    case: CaseReview
    finding: Finding | None


def get_case(study: Study) -> CaseReview:
    """The review row of a study (created on first use), with the users it names."""
    try:
        return CaseReview.objects.select_related("study", "assignee", "signed_off_by").get(study=study)
    except CaseReview.DoesNotExist:
        _ensure_case_row(study)
        return CaseReview.objects.select_related("study", "assignee", "signed_off_by").get(study=study)


def _ensure_case_row(study: Study) -> None:
    try:
        with transaction.atomic():
            CaseReview.objects.get_or_create(study=study)
    except IntegrityError:
        pass  # created by a concurrent request


def _open_case(study: Study, base_revision, *, reopening: bool = False) -> CaseReview:
    """Lock the case row and check the client's base revision; a signed-off case takes only 'reopen'."""
    if not isinstance(base_revision, int) or isinstance(base_revision, bool):
        raise BadInput("'base_revision' must be an integer (the case revision your view is based on)")
    _ensure_case_row(study)
    case = CaseReview.objects.select_for_update(of=("self",)).select_related("study", "assignee", "signed_off_by").get(study=study)
    case.study.refresh_from_db(fields=["review_status"])
    if base_revision != case.revision:
        last = ReviewRevision.objects.filter(study=study).order_by("-revision").first()
        who, when = (last.username or "someone", timezone.localtime(last.created_at).strftime("%Y-%m-%d %H:%M:%S")) if last else ("someone", "an earlier time")
        raise Conflict(
            f"This case was changed by {who} at {when} (revision {case.revision}); reload to see their changes.",
            current_revision=case.revision,
        )
    if case.study.review_status == ReviewStatus.SIGNED_OFF and not reopening:
        by = case.signed_off_by.get_username() if case.signed_off_by else "someone"
        raise Conflict(f"This case was signed off by {by}; it must be reopened before it can be changed.",
                       current_revision=case.revision)
    return case


def _require_clinician(user) -> None:
    """Changing a read is clinical work: radiologists only (an admin who is also one is fine)."""
    if not has_role(user, Role.RADIOLOGIST):
        raise Forbidden("Only radiologists change findings or sign off; the admin role is not a clinical role.")


def _locked_finding(study: Study, finding_id) -> Finding:
    if not isinstance(finding_id, int) or isinstance(finding_id, bool):
        raise BadInput("'finding_id' must be an integer")
    finding = (Finding.objects.select_for_update(of=("self",)).select_related("series", "model_version")
               .filter(pk=finding_id).first())
    if finding is None or finding.study_id != study.pk:
        raise NotFound(f"Finding {finding_id} is not a finding of this study.")
    return finding


def _record(case: CaseReview, user, action: str, *, finding: Finding | None = None, before=None, after=None,
            audit_action: str, request=None, details: dict | None = None) -> ActionResult:
    """Append the revision, bump the case, move an unreviewed study to in review, audit."""
    case.revision += 1
    case.save(update_fields=["revision", "updated_at"])
    if case.study.review_status == ReviewStatus.UNREVIEWED:
        case.study.review_status = ReviewStatus.IN_REVIEW
        Study.objects.filter(pk=case.study.pk).update(review_status=ReviewStatus.IN_REVIEW)
    original_model = finding.model_version if finding is not None and finding.source == Finding.Source.AI else None
    ReviewRevision.objects.create(
        study=case.study, revision=case.revision, user=user, username=user.get_username(), action=action,
        finding=finding, before=before, after=after, model_version=original_model,
    )
    audit(user, audit_action, obj=case.study, request=request,
          details={"revision": case.revision, "finding": finding.pk if finding else None, **(details or {})})
    return ActionResult(case.revision, case, finding)


def _finding_change(study, user, base_revision, finding_id, action, audit_action, change, *, request=None, details=None):
    """The shared shape of the finding actions: ``change(finding)`` edits the locked finding."""
    _require_clinician(user)
    with transaction.atomic():
        case = _open_case(study, base_revision)
        finding = _locked_finding(study, finding_id)
        before = finding_json(finding)
        change(finding)
        finding.save()
        return _record(case, user, action, finding=finding, before=before, after=finding_json(finding),
                       audit_action=audit_action, request=request, details=details)


def accept_finding(study, user, *, base_revision, finding_id, request=None) -> ActionResult:
    def change(f):
        f.status, f.reject_reason = Finding.Status.ACCEPTED, ""

    return _finding_change(study, user, base_revision, finding_id, "accept", "review.finding.accepted", change, request=request)


def reject_finding(study, user, *, base_revision, finding_id, reason: str = "", request=None) -> ActionResult:
    def change(f):
        f.status, f.reject_reason = Finding.Status.REJECTED, reason

    return _finding_change(study, user, base_revision, finding_id, "reject", "review.finding.rejected", change,
                           request=request, details={"reason": reason})


def edit_finding(study, user, *, base_revision, finding_id, centre_mm=None, diameter_mm=None,
                 bbox_min_mm=None, bbox_max_mm=None, request=None) -> ActionResult:
    """Move / resize a finding. Its mask and the values measured on it (volume, mean HU, axes) no
    longer describe the new outline, so they are cleared; a later ``mask`` action measures again."""
    if all(v is None for v in (centre_mm, diameter_mm, bbox_min_mm, bbox_max_mm)):
        raise BadInput("'edit' needs at least one of centre_mm, diameter_mm, bbox_min_mm, bbox_max_mm")
    if (bbox_min_mm is None) != (bbox_max_mm is None):
        raise BadInput("bbox_min_mm and bbox_max_mm go together")
    if bbox_min_mm is not None and any(lo > hi for lo, hi in zip(bbox_min_mm, bbox_max_mm)):
        raise BadInput("bbox_min_mm must not exceed bbox_max_mm on any axis")

    def change(f):
        centre = centre_mm
        if centre is None and bbox_min_mm is not None:
            centre = [(lo + hi) / 2 for lo, hi in zip(bbox_min_mm, bbox_max_mm)]
        centre = centre if centre is not None else list(f.centre_xyz_mm)
        diameter = diameter_mm if diameter_mm is not None else f.diameter_mm
        _check_inside(f.series, centre)
        if bbox_min_mm is not None:
            lo, hi = bbox_min_mm, bbox_max_mm
        else:
            lo, hi = [c - diameter / 2 for c in centre], [c + diameter / 2 for c in centre]
        f.centre_x_mm, f.centre_y_mm, f.centre_z_mm = centre
        f.diameter_mm, f.bbox_min_xyz_mm, f.bbox_max_xyz_mm = diameter, list(lo), list(hi)
        f.status = Finding.Status.EDITED
        _clear_mask(f)

    return _finding_change(study, user, base_revision, finding_id, "edit", "review.finding.edited", change, request=request)


def paint_mask(study, user, *, base_revision, finding_id, mask, request=None) -> ActionResult:
    """Replace a finding's mask; volume, diameter, centre, box, axes and mean HU are measured on it."""
    def change(f):
        _apply_mask(f, f.series, mask)
        f.status = Finding.Status.EDITED

    return _finding_change(study, user, base_revision, finding_id, "mask", "review.finding.mask_edited", change, request=request)


def add_finding(study, user, *, base_revision, series_uid, centre_mm, diameter_mm, label=None, mask=None,
                request=None) -> ActionResult:
    _require_clinician(user)
    with transaction.atomic():
        case = _open_case(study, base_revision)
        series = Series.objects.filter(study=study, series_uid=series_uid).first() if isinstance(series_uid, str) else None
        if series is None:
            raise BadInput(f"'series_uid' {series_uid!r} is not a series of this study")
        _check_inside(series, centre_mm)
        finding = Finding(
            study=study, series=series, source=Finding.Source.RADIOLOGIST, status=Finding.Status.ACCEPTED,
            label=label or "nodule", created_by=user, centre_x_mm=centre_mm[0], centre_y_mm=centre_mm[1],
            centre_z_mm=centre_mm[2], diameter_mm=diameter_mm,
            bbox_min_xyz_mm=[c - diameter_mm / 2 for c in centre_mm], bbox_max_xyz_mm=[c + diameter_mm / 2 for c in centre_mm],
        )
        if mask is not None:
            _apply_mask(finding, series, mask)
        finding.save()
        return _record(case, user, "add", finding=finding, before=None, after=finding_json(finding),
                       audit_action="review.finding.added", request=request)


def relabel_finding(study, user, *, base_revision, finding_id, label, request=None) -> ActionResult:
    def change(f):
        f.label = label

    return _finding_change(study, user, base_revision, finding_id, "label", "review.finding.relabelled", change,
                           request=request, details={"label": label})


def comment(study, user, *, base_revision, text: str, finding_id=None, request=None) -> ActionResult:
    """A finding's comment, or the case comment when ``finding_id`` is None."""
    if finding_id is not None:
        def change(f):
            f.comment = text

        return _finding_change(study, user, base_revision, finding_id, "comment", "review.finding.commented", change, request=request)
    _require_clinician(user)
    with transaction.atomic():
        case = _open_case(study, base_revision)
        before = case_json(case)
        case.comment = text
        case.save(update_fields=["comment", "updated_at"])
        return _record(case, user, "comment", before=before, after=case_json(case),
                       audit_action="review.case.commented", request=request)


RESTORED_FIELDS = ("status", "label", "centre_mm", "bbox_min_mm", "bbox_max_mm", "diameter_mm", "long_axis_mm",
                   "short_axis_mm", "volume_ml", "mean_hu", "reject_reason", "mask")


def restore_finding(study, user, *, base_revision, finding_id, state, request=None) -> ActionResult:
    """Put a finding back into an earlier state (undo / redo). ``state`` must equal a state the finding
    had (its current one, or a before/after of one of its revisions); the stored copy is applied, so
    a client cannot slip in values the server never measured."""
    if not isinstance(state, dict):
        raise BadInput("'state' must be a finding object as returned by this API")

    def change(f):
        known = [finding_json(f)] + [
            snap for pair in ReviewRevision.objects.filter(finding=f).values_list("before", "after") for snap in pair if snap
        ]
        match = next((snap for snap in known if _same_state(snap, state)), None)
        if match is None:
            raise BadInput("'state' is not a state this finding has had; send a finding object as returned earlier")
        f.status, f.label = match["status"], match["label"]
        f.centre_x_mm, f.centre_y_mm, f.centre_z_mm = match["centre_mm"]
        f.bbox_min_xyz_mm, f.bbox_max_xyz_mm = match["bbox_min_mm"], match["bbox_max_mm"]
        f.diameter_mm, f.long_axis_mm, f.short_axis_mm = match["diameter_mm"], match["long_axis_mm"], match["short_axis_mm"]
        f.volume_ml, f.mean_hu, f.reject_reason = match["volume_ml"], match["mean_hu"], match["reject_reason"]
        if match["mask"] is None:
            f.clear_mask()
        else:
            f.mask_bits = base64.b64decode(match["mask"]["bits_b64"])
            f.mask_shape_zyx, f.mask_origin_zyx = match["mask"]["shape_zyx"], match["mask"]["origin_zyx"]
            f.mask_origin_xyz_mm = match["mask"].get("origin_xyz_mm")
            f.mask_spacing_zyx_mm = match["mask"].get("spacing_zyx_mm")

    return _finding_change(study, user, base_revision, finding_id, "restore", "review.finding.restored", change, request=request)


def assign_case(study, user, *, base_revision, username, request=None) -> ActionResult:
    """Admins assign anyone who reads studies; a radiologist takes a free case or gives back their own."""
    if username is not None and not isinstance(username, str):
        raise BadInput("'username' must be a user name or null")
    assignee = None
    if username is not None:
        assignee = User.objects.filter(username=username, is_active=True).first()
        if assignee is None or not can_read_studies(assignee):
            raise BadInput(f"'{username}' is not a radiologist or admin who can be assigned")
    with transaction.atomic():
        case = _open_case(study, base_revision)
        if not is_admin(user):
            mine_or_free = case.assignee_id in (None, user.pk)
            if not mine_or_free or assignee not in (None, user):
                raise Forbidden("Radiologists may take a free case or give back their own; an admin assigns others.")
        before = case_json(case)
        case.assignee = assignee
        case.save(update_fields=["assignee", "updated_at"])
        return _record(case, user, "assign", before=before, after=case_json(case), audit_action="review.case.assigned",
                       request=request, details={"assignee": username})


def sign_off_case(study, user, *, base_revision, request=None) -> ActionResult:
    """The assignee signs off (any radiologist while the case is unassigned); admins only when they
    are also radiologists. Clears the case's notice."""
    _require_clinician(user)
    with transaction.atomic():
        case = _open_case(study, base_revision)
        if case.assignee_id is not None and case.assignee_id != user.pk:
            raise Forbidden(f"This case is assigned to {case.assignee.get_username()}; only the assignee signs it off. "
                            "Take it over through an admin's reassignment first.")
        # AI candidates below the operating point need no decision: left alone they are background
        proposed = Finding.objects.filter(study=study, status=Finding.Status.PROPOSED, flagged=True).count()
        if proposed:
            raise BadInput(f"{proposed} finding(s) are still proposed; accept or reject each one before signing off.",
                           proposed=proposed)
        before = case_json(case)
        case.signed_off_by, case.signed_off_at, case.notice = user, timezone.now(), ""
        case.save(update_fields=["signed_off_by", "signed_off_at", "notice", "updated_at"])
        case.study.review_status = ReviewStatus.SIGNED_OFF
        Study.objects.filter(pk=study.pk).update(review_status=ReviewStatus.SIGNED_OFF)
        # A signed-off case is training data: the training app counts sign-offs and may queue a run.
        jobs.notify_on_commit(RETRAIN_CHECK_TASK, "signoffs")
        return _record(case, user, "signoff", before=before, after=case_json(case), audit_action="review.case.signed_off",
                       request=request)


def reopen_case(study, user, *, base_revision, reason: str = "", request=None) -> ActionResult:
    """The signer or the assignee (radiologists) reopen; anyone else with the admin role only with a
    ``reason``, which is audited and shown to the reader as the case's notice."""
    with transaction.atomic():
        case = _open_case(study, base_revision, reopening=True)
        if case.study.review_status != ReviewStatus.SIGNED_OFF:
            raise BadInput("This case is not signed off; there is nothing to reopen.")
        own = has_role(user, Role.RADIOLOGIST) and user.pk in (case.signed_off_by_id, case.assignee_id)
        if not own and not is_admin(user):
            raise Forbidden("Only the radiologist who signed this case off, its assignee, or an admin giving a reason may reopen it.")
        if not own and not reason:
            raise BadInput("An admin reopens a signed-off case only with a 'reason' (it goes into the audit log "
                           "and is shown to the radiologist).")
        notice = "" if own else f"Reopened by {user.get_username()} on {timezone.localdate():%Y-%m-%d}: {reason}"
        return _reopen(case, user, reason=reason, notice=notice, request=request)


def reopen_for_new_images(study, user, *, reason: str, notice: str, request=None) -> ActionResult | None:
    """Images were added to this study after the fact (a quarantined instance released by ``user``):
    reopen the case if it is signed off, without a base revision, and tell the reader through the
    case's notice. Returns None (notice set, nothing reopened) when the case is not signed off."""
    with transaction.atomic():
        _ensure_case_row(study)
        case = CaseReview.objects.select_for_update(of=("self",)).select_related("study", "assignee", "signed_off_by").get(study=study)
        case.study.refresh_from_db(fields=["review_status"])
        if case.study.review_status != ReviewStatus.SIGNED_OFF:
            case.notice = notice[:500]
            case.save(update_fields=["notice", "updated_at"])
            return None
        return _reopen(case, user, reason=reason, notice=notice, request=request)


def _reopen(case: CaseReview, user, *, reason: str, notice: str, request) -> ActionResult:
    before = case_json(case)
    case.signed_off_by, case.signed_off_at, case.notice = None, None, notice[:500]
    case.save(update_fields=["signed_off_by", "signed_off_at", "notice", "updated_at"])
    case.study.review_status = ReviewStatus.IN_REVIEW
    Study.objects.filter(pk=case.study.pk).update(review_status=ReviewStatus.IN_REVIEW)
    return _record(case, user, "reopen", before=before, after=case_json(case), audit_action="review.case.reopened",
                   request=request, details={"reason": reason} if reason else None)


def _check_inside(series: Series, centre_mm) -> None:
    grid = series_grid(series)
    if grid is not None and not grid.contains_point(centre_mm):
        raise BadInput(f"the point {[round(v, 1) for v in centre_mm]} mm lies outside series {series.series_uid}")


def _apply_mask(f: Finding, series: Series, payload) -> None:
    grid = series_grid(series)
    if grid is None:
        raise BadInput("this series has no regular voxel grid (missing positions or irregular slices); masks cannot be placed on it")
    try:
        mask, origin = decode_mask(payload, grid)
    except GeometryError as exc:
        raise BadInput(str(exc)) from None
    if not mask.any():
        raise BadInput("the mask is empty; reject the finding instead of erasing all of it")
    mask, origin = tight(mask, origin)
    m = measure_mask(grid, mask, origin)
    f.set_mask(mask, origin, grid)
    f.centre_x_mm, f.centre_y_mm, f.centre_z_mm = m["centre_xyz_mm"]
    f.bbox_min_xyz_mm, f.bbox_max_xyz_mm = list(m["bbox_min_xyz_mm"]), list(m["bbox_max_xyz_mm"])
    f.diameter_mm, f.volume_ml, f.mean_hu = m["diameter_mm"], m["volume_ml"], m["mean_hu"]
    f.long_axis_mm, f.short_axis_mm = m["long_axis_mm"], m["short_axis_mm"]


def _clear_mask(f: Finding) -> None:
    f.clear_mask()
    f.volume_ml = f.mean_hu = f.long_axis_mm = f.short_axis_mm = None


def _same_state(stored: dict, sent: dict) -> bool:
    for key in RESTORED_FIELDS:
        a, b = stored.get(key), sent.get(key)
        if isinstance(a, float) or isinstance(b, float):
            if not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)):
                return False
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(isinstance(v, (int, float)) for v in a + b):
            if not all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6) for x, y in zip(a, b)):
                return False
        elif a != b:
            return False
    return True
