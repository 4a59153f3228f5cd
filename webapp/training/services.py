"""Retraining: triggers (schedule, every N sign-offs, an admin), the one-at-a-time guard, the run
itself (snapshot -> fine-tune -> evaluate champion and challenger -> promotion rule), recovery.

The web app and beat call :func:`request_retraining`; the ``train`` worker calls :func:`run_training`
through ``workers.retrain``. Fine-tuning and metrics are ``ml.finetune``'s (contract: /tmp/contract
retrain.md, mirrored in the module's docstring); this module only feeds it and records what happened.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from webapp import jobs
from webapp.accounts.services import audit
from webapp.modelops import services as registry
from webapp.modelops.models import ModelVersion
from webapp.review.models import ReviewRevision

from . import dataset
from .models import DataSnapshot, SnapshotCase, TrainingRun
from .promotion import decide

log = logging.getLogger(__name__)
State, Trigger = TrainingRun.State, TrainingRun.Trigger
RETRAIN_TASK = "workers.retrain"
HEARTBEAT_SECONDS = 5.0
PROGRESS_SECONDS = 1.0
# Share of the run's progress bar per stage.
STAGES = {"data": (0.0, 0.1), "detector": (0.1, 0.55), "segmenter": (0.55, 0.8), "evaluate": (0.8, 1.0)}


class TrainingError(Exception):
    """An expected reason not to start or to stop a run; shown to admins verbatim."""


# --- requesting a run ---------------------------------------------------------------------------


def signoff_count() -> int:
    """Sign-offs ever made (revisions are append-only, so this only grows)."""
    return ReviewRevision.objects.filter(action="signoff").count()


def count_training_cases() -> int:
    uids = list(dataset.signed_off_studies().values_list("study_uid", flat=True))
    return sum(1 for side in dataset.split_of(uids).values() if side == dataset.TRAIN)


def request_retraining(trigger: str, *, actor=None, request=None) -> TrainingRun | None:
    """Queue a training run, or return None when the trigger has nothing to do.

    * ``signoffs``: when at least ``RETRAIN_EVERY_N_SIGNED_OFF`` cases were signed off since the last
      run was requested; keyed by that last run, so one crossing queues one run however many
      sign-offs race to report it.
    * ``schedule``: once a day (keyed by the date), skipped when nothing was signed off since the last
      successful request.
    * ``manual``: an admin; refused with :class:`TrainingError` when a run is active or no data exists.
    At most one run is queued or running: the database's partial unique index decides races.
    """
    manual = trigger == Trigger.MANUAL
    recover_stalled_training()
    count = signoff_count()
    last = TrainingRun.objects.order_by("-pk").first()
    key = None
    if trigger == Trigger.SIGNOFFS:
        every = settings.RETRAIN_EVERY_N_SIGNED_OFF
        since = count - (last.signoffs_seen if last else 0)
        if every <= 0 or since < every:
            return None
        key = f"signoffs:after-run-{last.pk if last else 0}"
    elif trigger == Trigger.SCHEDULE:
        if last is not None and last.state != State.FAILED and count == last.signoffs_seen:
            log.info("scheduled retraining skipped: nothing signed off since run %s", last.pk)
            return None
        key = f"schedule:{timezone.localdate().isoformat()}"
    elif not manual:
        raise ValueError(f"unknown trigger {trigger!r}")
    active = TrainingRun.objects.filter(state__in=[State.QUEUED, State.RUNNING]).first()
    if active is not None:
        return _refuse(manual, f"training run {active.pk} is already {active.state}; one run at a time")
    champion = registry.get_champion()
    if champion is None:
        return _refuse(manual, "there is no champion model to fine-tune")
    if count_training_cases() < max(1, settings.RETRAIN_MIN_TRAIN_CASES):
        return _refuse(manual, f"too few signed-off training cases (at least {max(1, settings.RETRAIN_MIN_TRAIN_CASES)} "
                               "needed; held-out cases are never trained on)")
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(trigger=trigger, trigger_key=key, signoffs_seen=count, parent=champion,
                                             requested_by=actor if getattr(actor, "pk", None) else None)
            jobs.enqueue_on_commit(RETRAIN_TASK, run.pk)
    except IntegrityError:
        # Another request won the race (same threshold crossing / day, or a run became active).
        return _refuse(manual, "another training run was requested at the same moment; one run at a time")
    audit(actor, "training.run.requested", obj=run, request=request,
          details={"trigger": trigger, "parent": champion.version, "signoffs": count})
    log.info("training run %s queued (%s, parent v%s)", run.pk, trigger, champion.version)
    return run


def _refuse(manual: bool, reason: str) -> None:
    if manual:
        raise TrainingError(reason.capitalize() + ".")
    log.info("retraining not queued: %s", reason)
    return None


def recover_stalled_training(*, stale_seconds: int | None = None) -> list[int]:
    """A running run without heartbeat lost its worker: it fails (a new run can be requested). A run
    queued that long lost its message (or waited for a worker): it is sent again (the claim makes a
    duplicate harmless)."""
    cutoff = timezone.now() - timedelta(seconds=settings.TRAINING_STALE_SECONDS if stale_seconds is None else stale_seconds)
    dead = list(TrainingRun.objects.filter(state=State.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", flat=True))
    for pk in dead:
        if TrainingRun.objects.filter(pk=pk, state=State.RUNNING, heartbeat_at__lt=cutoff).update(
                state=State.FAILED, finished_at=timezone.now(), stage="failed",
                error="the training worker stopped (no heartbeat); request a new run"):
            log.warning("training run %s failed: its worker stopped", pk)
    lost = list(TrainingRun.objects.filter(state=State.QUEUED, queued_at__lt=cutoff).values_list("pk", flat=True))
    for pk in lost:
        jobs.enqueue_on_commit(RETRAIN_TASK, pk)
    return dead + lost


# --- running it (train worker) --------------------------------------------------------------------


def claim(run_id: int) -> TrainingRun | None:
    """Compare-and-set queued -> running; fine-tunes the champion of this moment."""
    now = timezone.now()
    champion = registry.get_champion()
    if not TrainingRun.objects.filter(pk=run_id, state=State.QUEUED).update(
            state=State.RUNNING, started_at=now, heartbeat_at=now, stage="data", progress=0.0, parent=champion):
        return None
    return TrainingRun.objects.select_related("parent").get(pk=run_id)


def run_training(run_id: int) -> dict:
    """The whole run; safe to call twice (the second call finds it claimed and returns)."""
    run = claim(run_id)
    if run is None:
        return {"run_id": run_id, "state": "skipped"}
    with _Heartbeat(run.pk):
        try:
            _train_evaluate_decide(run)
        except TrainingError as exc:
            _fail(run, str(exc))
        except Exception:
            trace = uuid.uuid4().hex[:8]
            log.exception("training run %s failed (trace %s)", run.pk, trace)
            _fail(run, f"internal error during training (trace id {trace}); see the training worker's log")
    run.refresh_from_db()
    try:  # sign-offs that arrived during the run may have crossed the threshold again
        request_retraining(Trigger.SIGNOFFS)
    except Exception:
        log.exception("could not check the sign-off trigger after run %s", run.pk)
    return {"run_id": run.pk, "state": run.state, "decision": run.decision,
            "challenger": run.challenger.version if run.challenger else None}


def _train_evaluate_decide(run: TrainingRun) -> None:
    from ml.finetune import evaluate_cases, finetune, phantom_benchmark

    if run.parent is None:
        raise TrainingError("there is no champion model to fine-tune")
    _verify(run.parent)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    snapshot, train_cases, heldout_cases = build_snapshot(run)
    timings["data"] = time.perf_counter() - t
    if not train_cases:
        raise TrainingError("no signed-off training case could be read (see the snapshot's notes)")
    params = training_params()
    TrainingRun.objects.filter(pk=run.pk).update(snapshot=snapshot, params=params, timings=_rounded(timings))
    out = models_dir() / f"training-run-{run.pk}.pt"
    t = time.perf_counter()
    finetune(run.parent.path, train_cases, out, phantom_plan=tuple(params["phantom_plan"]),
             det_steps=params["det_steps"], seg_steps=params["seg_steps"], lr=params["lr"], seed=params["seed"],
             device=params["device"], cache_dir=Path(settings.RETRAIN_CACHE_DIR), progress=_reporter(run.pk))
    timings["finetune"] = time.perf_counter() - t
    del train_cases
    challenger = registry.register_model_file(out, name="finetuned", parent=run.parent)
    TrainingRun.objects.filter(pk=run.pk).update(challenger=challenger, timings=_rounded(timings))
    run.challenger = challenger

    t = time.perf_counter()
    _report(run.pk, "evaluate", 0, 4)
    metrics = {}
    for i, (who, model) in enumerate((("champion", run.parent), ("challenger", challenger))):
        _verify(model)
        heldout = evaluate_cases(model.path, heldout_cases, device=params["device"]) if heldout_cases else None
        _report(run.pk, "evaluate", 2 * i + 1, 4)
        phantom = phantom_benchmark(model.path, n=settings.RETRAIN_BENCHMARK_N, seed=settings.RETRAIN_BENCHMARK_SEED,
                                    device=params["device"], preset=settings.RETRAIN_BENCHMARK_PRESET)
        _report(run.pk, "evaluate", 2 * i + 2, 4)
        metrics[who] = registry._jsonable({"heldout": heldout, "phantom": phantom})
    timings["evaluate"] = time.perf_counter() - t
    promote_it, reason = decide(metrics["champion"], metrics["challenger"], settings.PROMOTION_RULE)
    _finish(run, challenger, metrics, promote_it, reason, timings)


def _finish(run: TrainingRun, challenger: ModelVersion, metrics: dict, promote_it: bool, reason: str, timings: dict) -> None:
    decision = TrainingRun.Decision.PROMOTED if promote_it else TrainingRun.Decision.REJECTED
    current = registry.get_champion()
    if promote_it and (current is None or current.pk != run.parent_id):
        decision, promote_it = TrainingRun.Decision.REJECTED, False
        reason = (f"not promoted: the champion changed during training (now v{current.version if current else '-'}, "
                  f"this run was measured against v{run.parent.version}); " + reason)
    if promote_it and settings.PROMOTION_REQUIRES_APPROVAL:
        decision = TrainingRun.Decision.AWAITING  # stays a challenger until an admin approves or rejects it
    elif promote_it:
        registry.promote(challenger, reason=f"training run {run.pk}: {reason}")
    else:
        ModelVersion.objects.filter(pk=challenger.pk).update(status=ModelVersion.Status.REJECTED)
    TrainingRun.objects.filter(pk=run.pk).update(
        state=State.DONE, stage="done", progress=1.0, eta_seconds=0.0, finished_at=timezone.now(),
        champion_metrics=metrics["champion"], challenger_metrics=metrics["challenger"], decision=decision,
        decision_reason=reason, timings=_rounded(timings))
    action = "training.run.awaiting_approval" if decision == TrainingRun.Decision.AWAITING else f"training.run.{decision}"
    audit(None, action, obj=run, details={"challenger": challenger.version, "reason": reason[:1000]})
    log.info("training run %s: v%s %s (%s)", run.pk, challenger.version, decision, reason)


# --- an admin's decision (PROMOTION_REQUIRES_APPROVAL) ---------------------------------------------


def _awaiting(run_id: int) -> TrainingRun:
    """The run, locked; refused unless its challenger awaits approval."""
    run = TrainingRun.objects.select_for_update(of=("self",)).select_related("parent", "challenger").get(pk=run_id)
    if run.decision != TrainingRun.Decision.AWAITING or run.challenger is None:
        raise TrainingError(f"training run {run.pk} has no challenger awaiting approval "
                            f"(its decision: {run.get_decision_display()})")
    return run


def approve_challenger(run_id: int, *, actor, request=None) -> ModelVersion:
    """An admin approves the winner of run ``run_id``: it becomes the champion. Refused when the champion
    changed since the run measured against it (the comparison no longer holds)."""
    run = TrainingRun.objects.select_related("challenger").get(pk=run_id)
    if run.challenger is not None:
        _verify(run.challenger)  # before the transaction: a refusal's audit entry must stay
    with transaction.atomic():
        run = _awaiting(run_id)
        champion = registry.get_champion()
        if champion is None or champion.pk != run.parent_id:
            raise TrainingError(
                f"v{run.challenger.version} was measured against v{run.parent.version}, but the champion is now "
                f"v{champion.version if champion else '-'}; reject it and retrain, or promote it with the Promote button")
        try:
            promoted = registry.promote(run.challenger, actor=actor, request=request,
                                        reason=f"approved by an admin; training run {run.pk}: {run.decision_reason}")
        except registry.RegistryError as exc:
            raise TrainingError(str(exc)) from None
        TrainingRun.objects.filter(pk=run.pk).update(decision=TrainingRun.Decision.PROMOTED, decided_by=actor,
                                                     decided_at=timezone.now())
        audit(actor, "training.challenger.approved", obj=run, request=request,
              details={"challenger": promoted.version, "replaced": run.parent.version})
    return promoted


def reject_challenger(run_id: int, *, actor, note: str = "", request=None) -> ModelVersion:
    """An admin rejects the winner of run ``run_id``: it is *rejected* and stays so (promoting it later
    needs a written reason, see ``modelops.services.promote``)."""
    with transaction.atomic():
        run = _awaiting(run_id)
        ModelVersion.objects.filter(pk=run.challenger_id).update(status=ModelVersion.Status.REJECTED)
        TrainingRun.objects.filter(pk=run.pk).update(decision=TrainingRun.Decision.REJECTED, decided_by=actor,
                                                     decided_at=timezone.now(), decision_note=note.strip()[:2000])
        audit(actor, "training.challenger.rejected", obj=run, request=request,
              details={"challenger": run.challenger.version, "note": note.strip()[:1000]})
    run.challenger.refresh_from_db()
    return run.challenger


def promote_by_admin(model: ModelVersion, *, actor, written_reason: str = "", request=None) -> ModelVersion:
    """The Promote button: a challenger awaiting approval is approved; a rejected version needs
    ``written_reason``; any other version is promoted."""
    run = TrainingRun.objects.filter(challenger=model, decision=TrainingRun.Decision.AWAITING).first()
    if run is not None:
        return approve_challenger(run.pk, actor=actor, request=request)
    try:
        return registry.promote(model, actor=actor, request=request, reason="promoted by an admin",
                                written_reason=written_reason)
    except registry.RegistryError as exc:
        raise TrainingError(str(exc)) from None


def _verify(model: ModelVersion) -> None:
    """A model file is loaded only when it is the registered one (its SHA-256)."""
    try:
        registry.verify_model_file(model)
    except registry.ModelIntegrityError as exc:
        raise TrainingError(str(exc)) from None


def _fail(run: TrainingRun, reason: str) -> None:
    TrainingRun.objects.filter(pk=run.pk).update(state=State.FAILED, stage="failed", error=reason,
                                                 finished_at=timezone.now())
    run.refresh_from_db()
    if run.challenger_id:
        ModelVersion.objects.filter(pk=run.challenger_id, status=ModelVersion.Status.CHALLENGER).update(
            status=ModelVersion.Status.REJECTED)
    audit(None, "training.run.failed", obj=run, details={"error": reason[:1000]})


def training_params() -> dict:
    return {"det_steps": settings.RETRAIN_DET_STEPS, "seg_steps": settings.RETRAIN_SEG_STEPS, "lr": settings.RETRAIN_LR,
            "seed": settings.RETRAIN_SEED, "device": settings.RETRAIN_DEVICE or None,
            "phantom_plan": [["small", settings.RETRAIN_PHANTOMS_SMALL], ["full", settings.RETRAIN_PHANTOMS_FULL]],
            "benchmark": {"n": settings.RETRAIN_BENCHMARK_N, "seed": settings.RETRAIN_BENCHMARK_SEED,
                          "preset": settings.RETRAIN_BENCHMARK_PRESET},
            "heldout_share": settings.RETRAIN_HELDOUT_SHARE, "promotion_rule": dict(settings.PROMOTION_RULE)}


def models_dir() -> Path:
    folder = Path(settings.RETRAIN_MODELS_DIR) if settings.RETRAIN_MODELS_DIR else Path(settings.MEDIA_ROOT) / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- the data snapshot --------------------------------------------------------------------------


def build_snapshot(run: TrainingRun) -> tuple[DataSnapshot, list, list]:
    """Read every signed-off case (labels at its current revision, volumes from the archive), split
    it, and record which study at which revision went where. Returns (snapshot, train, held out)."""
    studies = list(dataset.signed_off_studies().order_by("pk"))
    sides = dataset.split_of([s.study_uid for s in studies])
    snapshot = DataSnapshot.objects.create(heldout_share=settings.RETRAIN_HELDOUT_SHARE)
    cases = {dataset.TRAIN: [], dataset.HELDOUT: []}
    rows = []
    for i, study in enumerate(studies):
        _report(run.pk, "data", i, len(studies))
        labels = dataset.read_labels(study)
        if labels is None:  # reopened since the list was made
            continue
        side, notes, used = sides[study.study_uid], [], []
        for series in labels.series:
            try:
                volume = dataset.load_volume(series.series_id)
            except dataset.UnreadableSeries as exc:
                notes.append(f"series {series.series_uid} left out: {exc}")
                continue
            case_id = study.study_uid if len(labels.series) == 1 else f"{study.study_uid}/{series.series_uid}"
            used.append((series, dataset.labelled_case(series, volume, case_id=case_id)))
        if not labels.series:
            notes.append("no CT series")
        cases[side].extend(case for _, case in used)
        row = SnapshotCase(snapshot=snapshot, study=study, study_uid=study.study_uid, revision=labels.revision,
                           split=side, lesions=sum(len(s.lesions) for s, _ in used),
                           hard_negatives=sum(len(s.hard_negatives_xyz_mm) for s, _ in used), note="; ".join(notes)[:300])
        row.used = bool(used)
        rows.append(row)
    SnapshotCase.objects.bulk_create(rows)
    train = [r for r in rows if r.split == dataset.TRAIN and r.used]
    DataSnapshot.objects.filter(pk=snapshot.pk).update(
        n_train_cases=len(train), n_heldout_cases=sum(1 for r in rows if r.split == dataset.HELDOUT and r.used),
        n_lesions=sum(r.lesions for r in train), n_hard_negatives=sum(r.hard_negatives for r in train))
    snapshot.refresh_from_db()
    log.info("snapshot %s: %d training / %d held-out cases", snapshot.pk, len(cases[dataset.TRAIN]),
             len(cases[dataset.HELDOUT]))
    return snapshot, cases[dataset.TRAIN], cases[dataset.HELDOUT]


# --- progress and heartbeat ---------------------------------------------------------------------


def _report(run_id: int, stage: str, step: int, steps: int, loss=None, eta=None) -> None:
    lo, hi = STAGES.get(stage, (0.0, 1.0))
    fraction = lo + (hi - lo) * (min(step, steps) / steps if steps else 0.0)
    TrainingRun.objects.filter(pk=run_id, state=State.RUNNING).update(
        stage=stage[:50], step=max(0, int(step)), steps=max(0, int(steps)), progress=round(fraction, 4),
        loss=_finite_or_none(loss), eta_seconds=_finite_or_none(eta),
        heartbeat_at=timezone.now())


def _reporter(run_id: int):
    """``progress(dict)`` for ml.finetune: at most one row update per second (and every stage change)."""
    last = {"t": 0.0, "stage": None}

    def progress(info: dict) -> None:
        now = time.monotonic()
        stage = str(info.get("stage", ""))
        if now - last["t"] < PROGRESS_SECONDS and stage == last["stage"]:
            return
        last.update(t=now, stage=stage)
        _report(run_id, stage, int(info.get("step") or 0), int(info.get("steps") or 0), info.get("loss"), info.get("eta_s"))

    return progress


class _Heartbeat:
    """A thread that stamps ``heartbeat_at`` while the run's process is alive, whatever stage it is in
    (evaluation reports no progress). A dead worker stops it; recovery then fails the run."""

    def __init__(self, run_id: int):
        self.run_id, self.stop = run_id, threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"training-heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self.stop.wait(HEARTBEAT_SECONDS):
                close_old_connections()
                TrainingRun.objects.filter(pk=self.run_id, state=State.RUNNING).update(heartbeat_at=timezone.now())
        except Exception:
            log.exception("training heartbeat stopped")
        finally:
            connection.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=HEARTBEAT_SECONDS * 2)


def _finite_or_none(value):
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _rounded(timings: dict) -> dict:
    return {k: round(v, 2) for k, v in timings.items()}
