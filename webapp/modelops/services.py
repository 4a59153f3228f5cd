"""Model registry and the inference pipeline: queue, claim, run, store, recover.

Tasks in ``workers`` call these; the web app queues by task name through ``webapp.jobs``.
A run is keyed by (series, model version): queueing again resets it, running it twice stores one
set of findings, and a run whose worker died is found by its stale heartbeat and queued again.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from webapp import jobs
from webapp.accounts.services import audit
from webapp.archive import services as archive
from webapp.archive.models import AIStatus, ReviewStatus, Series, Study
from webapp.review.services import CaseSignedOff, replace_ai_findings

from .models import InferenceRun, ModelVersion

log = logging.getLogger(__name__)
State = InferenceRun.State
INFER_TASK = "workers.infer_series"
MODALITIES_WITH_MODELS = {"CT"}
HEARTBEAT_SECONDS = 2.0


class InferenceError(Exception):
    """An expected failure (e.g. a series that cannot form a volume); shown to admins verbatim."""


# --- registry -----------------------------------------------------------------------------------


def get_champion() -> ModelVersion | None:
    """The model that reads new studies; the shipped baseline becomes version 1 on first use."""
    champion = ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).first()
    if champion is None and not ModelVersion.objects.exists():
        champion = register_baseline()
    return champion


def _file_sha256(path: Path) -> str:
    from ml.checkpoint import file_sha256  # ml (and torch) load only where a model file is handled

    return file_sha256(path)


class ModelIntegrityError(InferenceError):
    """A model file that is missing or is not the file that was registered; never loaded."""


# SHA-256 of files already hashed in this process, keyed by what any change to a file changes: a
# write moves mtime and ctime (ctime cannot be set back from user space), a replacement the inode.
_verified_sha: dict[tuple, str] = {}
_reported: set[tuple] = set()


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify_model_file(model: ModelVersion) -> tuple:
    """Check that ``model``'s file is the one registered (its SHA-256) before anything loads it.

    Returns the file's stat key (compare it after loading: the same key means the same bytes were
    loaded). Raises :class:`ModelIntegrityError` with the reason; a mismatch is logged and audited
    (``modelops.model.integrity_failed``, once per changed file and process). A changed *shipped*
    baseline (an update of ``BASELINE_MODEL_PATH``) is registered as a new challenger that an admin
    can promote; the old version stays refused.
    """
    path = model.path
    try:
        key = _file_key(path)
    except OSError:
        raise ModelIntegrityError(f"the model file of v{model.version} is missing ({model.file_path}); "
                                  "refusing to load") from None
    sha = _verified_sha.get(key)
    if sha is None:
        sha = _file_sha256(path)
        if len(_verified_sha) > 64:
            _verified_sha.clear()
        _verified_sha[key] = sha
    if sha == model.sha256:
        return key
    hint = "restore the file, or promote another version on /models/"
    changed = _register_changed_baseline(model, path, sha)
    if changed is not None:
        hint = (f"the shipped baseline file changed since it was registered; it is registered as v{changed.version} "
                "(a challenger), which an admin can check and promote on /models/")
    if key not in _reported:
        _reported.add(key)
        log.error("model v%s: file %s has SHA-256 %s, registered %s; refusing to load", model.version, path, sha,
                  model.sha256)
        audit(None, "modelops.model.integrity_failed", obj=model,
              details={"file": model.file_path, "registered_sha256": model.sha256, "file_sha256": sha,
                       "registered_as": changed.version if changed else None})
    raise ModelIntegrityError(f"model file {model.file_path} (v{model.version}) does not match its registered "
                              f"SHA-256; refusing to load. {hint[0].upper()}{hint[1:]}.")


def _register_changed_baseline(model: ModelVersion, path: Path, sha: str) -> ModelVersion | None:
    """The version registered for a changed shipped baseline file (made once), or None for other files."""
    shipped = Path(settings.BASELINE_MODEL_PATH)
    shipped = shipped if shipped.is_absolute() else Path(settings.BASE_DIR) / shipped
    if path.resolve() != shipped.resolve():
        return None
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(pk=model.pk).first()  # one registration at a time
        existing = ModelVersion.objects.filter(sha256=sha, file_path=model.file_path).first()
        if existing is not None:
            return existing
        try:
            return register_model_file(path, name="baseline (changed file)", parent=None, file_path=model.file_path)
        except Exception:
            log.exception("the changed baseline file %s could not be registered", path)
            return None


def register_baseline() -> ModelVersion | None:
    path = Path(settings.BASELINE_MODEL_PATH)
    full = path if path.is_absolute() else Path(settings.BASE_DIR) / path
    if not full.exists():
        log.error("no baseline model file at %s", full)
        return None
    from ml.checkpoint import load_model_file

    payload = load_model_file(full)
    metadata = {k: v for k, v in payload.items() if k != "models"}
    version, _ = ModelVersion.objects.get_or_create(
        version=1,
        defaults=dict(name="baseline", file_path=str(path), sha256=_file_sha256(full),
                      status=ModelVersion.Status.CHAMPION, metadata=_jsonable(metadata), promoted_at=timezone.now()),
    )
    return version


def _jsonable(value):
    """JSON-safe copy: NaN and infinities become None (PostgreSQL's jsonb refuses them)."""
    import json
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return clean(json.loads(json.dumps(value, default=str)))


class RegistryError(Exception):
    """A registry change that cannot be made (no previous champion, missing file); shown verbatim."""


def register_model_file(path: Path, *, name: str, parent: ModelVersion | None, file_path: str = "") -> ModelVersion:
    """A new version (the next number) for a model file, as a challenger; metadata from the file.
    ``file_path``: the path to store, when not ``path`` itself (the shipped baseline's relative path)."""
    from ml.checkpoint import load_model_file

    payload = load_model_file(path)
    metadata = _jsonable({k: v for k, v in payload.items() if k != "models"})
    sha = _file_sha256(path)
    for _ in range(5):  # two registrations racing for the same number: the loser takes the next one
        number = (ModelVersion.objects.order_by("-version").values_list("version", flat=True).first() or 0) + 1
        try:
            with transaction.atomic():
                return ModelVersion.objects.create(version=number, name=name, file_path=file_path or str(path), sha256=sha,
                                                   status=ModelVersion.Status.CHALLENGER, parent=parent, metadata=metadata)
        except IntegrityError:
            continue
    raise RegistryError("could not allocate a version number")


MIN_WRITTEN_REASON = 10  # characters an admin must write to promote a rejected version


def promote(model: ModelVersion, *, actor=None, reason: str = "", request=None, rollback: bool = False,
            written_reason: str = "") -> ModelVersion:
    """Make ``model`` the champion; the old champion is retired. New inference runs use it at once
    (queue_inference asks for the champion; a worker loads a model it has not cached). ``rollback``:
    return to an earlier champion without recording the one left as its predecessor.
    A *rejected* version (lost the promotion rule, or an admin rejected it) is promoted only with an
    admin's ``written_reason``, which the audit entry keeps."""
    if model.path.exists():  # (outside the transaction: the refusal's audit entry must stay)
        try:
            verify_model_file(model)
        except ModelIntegrityError as exc:
            raise RegistryError(str(exc)[0].lower() + str(exc)[1:].rstrip(".")) from None
    with transaction.atomic():
        rows = {m.pk: m for m in ModelVersion.objects.select_for_update().filter(
            Q(pk=model.pk) | Q(status=ModelVersion.Status.CHAMPION))}
        target = rows[model.pk]
        old = next((m for m in rows.values() if m.status == ModelVersion.Status.CHAMPION), None)
        if old is not None and old.pk == target.pk:
            raise RegistryError(f"v{target.version} is already the champion")
        overrides = target.status == ModelVersion.Status.REJECTED
        if overrides and len(written_reason.strip()) < MIN_WRITTEN_REASON:
            raise RegistryError(f"v{target.version} was rejected; promoting it anyway needs a written reason (at least "
                                f"{MIN_WRITTEN_REASON} characters), which goes into the audit log")
        if not target.path.exists():
            raise RegistryError(f"the model file of v{target.version} is missing ({target.file_path})")
        if old is not None:
            ModelVersion.objects.filter(pk=old.pk).update(status=ModelVersion.Status.RETIRED)
        fields = dict(status=ModelVersion.Status.CHAMPION, promoted_at=timezone.now())
        if not rollback:
            fields["previous_champion"] = old
        ModelVersion.objects.filter(pk=target.pk).update(**fields)
        target.refresh_from_db()
        action = "modelops.model.rolled_back" if rollback else "modelops.model.promoted"
        audit(actor, action, obj=target, request=request,
              details={"champion": target.version, "replaced": old.version if old else None,
                       "reason": (written_reason.strip() or reason)[:1000], "overrides_rejection": overrides})
    log.info("v%s is the champion (was v%s): %s", target.version, old.version if old else None, reason or action)
    return target


def roll_back(*, actor, request=None) -> ModelVersion:
    """Return to the champion the current one replaced."""
    champion = get_champion()
    previous = champion.previous_champion if champion else None
    if previous is None:
        raise RegistryError("there is no previous champion to roll back to")
    return promote(previous, actor=actor, request=request, rollback=True,
                   reason=f"rolled back from v{champion.version}")


# --- queueing -----------------------------------------------------------------------------------


def prepare_and_queue(series_id: int, quiet_seconds: float = 0) -> InferenceRun | None:
    """After upload: geometry + thumbnail, then an inference run if a model reads this modality.

    With ``quiet_seconds`` (STOW-RS), nothing happens while instances of the series are still
    arriving: the request that brought the newest one has scheduled its own, later check."""
    if quiet_seconds and archive.series_still_arriving(series_id, quiet_seconds):
        log.info("series %s still receiving instances; a later check prepares it", series_id)
        return None
    archive.prepare_series(series_id)
    return queue_inference(Series.objects.select_related("study").get(pk=series_id))


def queue_inference(series: Series, *, model: ModelVersion | None = None, actor=None,
                    recovering: bool = False) -> InferenceRun | None:
    """Create or reset the run for (series, model) and send it to the gpu queue after commit.
    ``recovering`` (a run whose worker died) keeps its count of attempts, so a series that kills
    every worker that reads it ends failed after ``INFERENCE_MAX_ATTEMPTS`` (see :func:`claim`)."""
    if series.modality not in MODALITIES_WITH_MODELS:
        run, _ = InferenceRun.objects.update_or_create(
            series=series, model_version=None,
            defaults=dict(state=State.NO_MODEL, error=f"no model reads {series.modality or 'this modality'} series",
                          finished_at=timezone.now()),
        )
        update_study_status(series.study_id)
        return run
    model = model or get_champion()
    if model is None:
        raise InferenceError("no model version is available (the baseline model file is missing)")
    with transaction.atomic():
        run, created = InferenceRun.objects.select_for_update().get_or_create(
            series=series, model_version=model, defaults={"requested_by": actor if getattr(actor, "pk", None) else None}
        )
        if not created:
            InferenceRun.objects.filter(pk=run.pk).update(
                state=State.QUEUED, progress=0.0, stage="", error="", queued_at=timezone.now(),
                started_at=None, finished_at=None, heartbeat_at=None,
                **({} if recovering else {"attempts": 0}),
            )
        update_study_status(series.study_id)
        jobs.enqueue_on_commit(INFER_TASK, run.pk)
    if actor is not None:
        audit(actor, "modelops.inference.queued", obj=run, details={"series": series.series_uid, "model": model.version})
    return run


def rerun_unreviewed(*, actor, model: ModelVersion | None = None) -> int:
    """Queue every CT series of every unreviewed study with the (current) champion."""
    count = 0
    for series in Series.objects.filter(study__review_status=ReviewStatus.UNREVIEWED, modality__in=MODALITIES_WITH_MODELS):
        queue_inference(series, model=model, actor=actor)
        count += 1
    return count


# --- running ------------------------------------------------------------------------------------


WORKER_LOST = ("the worker was killed while reading this series (out of memory?) {n} times; "
               "it is not run again automatically")


def claim(run_id: int) -> InferenceRun | None:
    """Compare-and-set queued/running -> running. None when the run is finished or gone, or when
    its earlier attempts all ended with their worker killed (acks_late redelivers the message of a
    dead worker; the upkeep re-queues a run without heartbeat): after ``INFERENCE_MAX_ATTEMPTS``
    such attempts the run fails with that reason instead of running again."""
    now = timezone.now()
    limit = settings.INFERENCE_MAX_ATTEMPTS
    if InferenceRun.objects.filter(pk=run_id, state__in=[State.QUEUED, State.RUNNING], attempts__gte=limit).update(
            state=State.FAILED, error=WORKER_LOST.format(n=limit), finished_at=now, stage="failed"):
        run = InferenceRun.objects.select_related("series__study").get(pk=run_id)
        log.error("inference run %s: %s", run_id, run.error)
        update_study_status(run.series.study_id)
        audit(None, "modelops.inference.failed", obj=run, details={"series": run.series.series_uid, "error": run.error})
        return None
    claimed = InferenceRun.objects.filter(pk=run_id, state__in=[State.QUEUED, State.RUNNING]).update(
        state=State.RUNNING, started_at=now, heartbeat_at=now, progress=0.0, stage="loading",
        attempts=F("attempts") + 1, error="",
    )
    if not claimed:
        return None
    run = InferenceRun.objects.select_related("series__study", "model_version").get(pk=run_id)
    update_study_status(run.series.study_id)
    return run


@dataclass
class RunResult:
    run_id: int
    state: str
    findings: int = 0
    error: str = ""


def run_inference(run_id: int, predictor_for: Callable[[ModelVersion], object]) -> RunResult:
    """Claim the run, read the series as a volume, predict, store findings. Safe to call twice."""
    run = claim(run_id)
    if run is None:
        return RunResult(run_id, "skipped")
    started = time.perf_counter()
    try:
        volume = _load_volume(run)
        load_seconds = time.perf_counter() - started
        file_key = verify_model_file(run.model_version)  # never load a file that is not the registered one
        predictor = predictor_for(run.model_version)
        if _file_key(run.model_version.path) != file_key:
            raise ModelIntegrityError(f"model file {run.model_version.file_path} changed while it was loaded; "
                                      "refusing to use it")
        prediction = predictor.predict(volume, tta=settings.INFERENCE_TTA, progress=_progress_reporter(run.pk))
        store_started = time.perf_counter()
        try:
            with transaction.atomic():
                stored = replace_ai_findings(run, prediction.findings, volume)
                timings = {"load_volume": load_seconds, **prediction.timings, "store": time.perf_counter() - store_started}
                InferenceRun.objects.filter(pk=run.pk).update(
                    state=State.DONE, progress=1.0, stage="done", device=prediction.device, findings_count=stored,
                    case_uncertainty=prediction.case_uncertainty, finished_at=timezone.now(),
                    timings={k: round(v, 3) for k, v in timings.items()},
                )
                update_study_status(run.series.study_id)
        except CaseSignedOff:
            # A signed-off read never changes under the reader: the run ends, nothing is stored.
            InferenceRun.objects.filter(pk=run.pk).update(
                state=State.DONE, progress=1.0, stage="case signed off: not stored", findings_count=0,
                device=prediction.device, finished_at=timezone.now())
            update_study_status(run.series.study_id)
            audit(None, "modelops.inference.not_stored", obj=run,
                  details={"series": run.series.series_uid, "reason": "case signed off"})
            return RunResult(run.pk, State.DONE, 0)
        return RunResult(run.pk, State.DONE, stored)
    except InferenceError as exc:
        return _fail(run, str(exc))
    except Exception:
        trace = uuid.uuid4().hex[:8]
        log.exception("inference run %s failed (trace %s)", run.pk, trace)
        return _fail(run, f"internal error while reading this series (trace id {trace}); see the worker log")


def _load_volume(run: InferenceRun):
    from ml.volumes import SeriesError, load_series

    storage = archive.archive_storage()
    paths = [storage.path(p) for p in run.series.instances.values_list("file_path", flat=True)]
    try:
        volume, report = load_series(paths, **archive.volume_caps())
    except SeriesError as exc:
        raise InferenceError(f"this series cannot be read as a CT volume: {exc}") from None
    except Exception as exc:  # unreadable pixels, corrupt files
        raise InferenceError(f"this series cannot be read as a CT volume: {type(exc).__name__}: {exc}") from None
    if report.warnings:
        InferenceRun.objects.filter(pk=run.pk).update(stage="; ".join(report.warnings)[:50])
    return volume


def _progress_reporter(run_id: int) -> Callable[[float, str], None]:
    last = [0.0]

    def report(fraction: float, stage: str) -> None:
        now = time.monotonic()
        if now - last[0] >= HEARTBEAT_SECONDS or fraction >= 1.0:
            last[0] = now
            InferenceRun.objects.filter(pk=run_id, state=State.RUNNING).update(
                progress=max(0.0, min(1.0, fraction)), stage=stage[:50], heartbeat_at=timezone.now()
            )

    return report


def _fail(run: InferenceRun, reason: str) -> RunResult:
    InferenceRun.objects.filter(pk=run.pk).update(state=State.FAILED, error=reason, finished_at=timezone.now(), stage="failed")
    update_study_status(run.series.study_id)
    audit(None, "modelops.inference.failed", obj=run, details={"series": run.series.series_uid, "error": reason[:500]})
    return RunResult(run.pk, State.FAILED, error=reason)


def update_study_status(study_id: int) -> str:
    """uploaded -> processing -> ai_ready / ai_failed / no_model, from the study's runs."""
    runs = InferenceRun.objects.filter(series__study_id=study_id)
    states = set(runs.values_list("state", flat=True))
    if states & {State.QUEUED, State.RUNNING}:
        status = AIStatus.PROCESSING
    elif State.FAILED in states:
        status = AIStatus.AI_FAILED
    elif State.DONE in states:
        status = AIStatus.AI_READY
    elif State.NO_MODEL in states:
        status = AIStatus.NO_MODEL
    else:
        status = AIStatus.UPLOADED
    Study.objects.filter(pk=study_id).exclude(ai_status=status).update(ai_status=status)
    return status


# --- recovery -----------------------------------------------------------------------------------


def recover_stalled_runs(*, stale_seconds: int | None = None, actor=None, include_queued: bool = True,
                         queued_before=None) -> list[int]:
    """Queue again the runs whose worker died (running, no heartbeat) or, with ``include_queued``,
    whose message was lost (queued long ago, e.g. the broker restarted without persistence). Returns
    their ids. The periodic upkeep leaves queued runs alone: a long backlog is not a lost message,
    except the runs queued before ``queued_before`` (when the broker restarted empty)."""
    stale = timedelta(seconds=stale_seconds if stale_seconds is not None else settings.INFERENCE_STALE_SECONDS)
    cutoff = timezone.now() - stale
    lost = Q(state=State.RUNNING, heartbeat_at__lt=cutoff)
    if include_queued:
        lost |= Q(state=State.QUEUED, queued_at__lt=cutoff)
    if queued_before is not None:
        lost |= Q(state=State.QUEUED, queued_at__lt=queued_before)
    stalled = InferenceRun.objects.filter(lost).select_related("series", "model_version")
    recovered = []
    for run in stalled:
        queue_inference(run.series, model=run.model_version, actor=actor, recovering=True)
        recovered.append(run.pk)
    if recovered:
        log.warning("re-queued %d stalled inference run(s): %s", len(recovered), recovered)
    return recovered


def pipeline_upkeep() -> dict:
    """The periodic job (beat, every minute): finish upload batches the browser abandoned (their series
    are prepared and read like any other), re-queue runs whose worker died mid-run, and those whose
    message a broker restart lost (a Redis without persistence; the worker reconnects, it does not restart)."""
    finished = archive.finish_abandoned_batches(settings.UPLOAD_ABANDONED_SECONDS)
    recovered = recover_stalled_runs(include_queued=False, queued_before=jobs.broker_lost_messages_before())
    return {"finished_batches": finished, "recovered_runs": recovered}


# --- what the case browser shows ------------------------------------------------------------------


def ai_summary(study_ids: list[int]) -> dict[int, dict]:
    """Per study: progress of its active runs (0..1 or None), AI findings count, largest diameter (mm),
    and the error of a failed run."""
    from django.db.models import Avg, Count, Max

    from webapp.review.models import Finding

    out = {sid: {"progress": None, "findings": 0, "largest_mm": None, "error": ""} for sid in study_ids}
    active = (InferenceRun.objects.filter(series__study_id__in=study_ids, state__in=[State.QUEUED, State.RUNNING])
              .values("series__study_id").annotate(p=Avg("progress")))
    for row in active:
        out[row["series__study_id"]]["progress"] = row["p"]
    stats = (Finding.objects.filter(study_id__in=study_ids, source=Finding.Source.AI)
             .values("study_id").annotate(n=Count("id"), largest=Max("diameter_mm")))
    for row in stats:
        out[row["study_id"]].update(findings=row["n"], largest_mm=row["largest"])
    for run in InferenceRun.objects.filter(series__study_id__in=study_ids, state=State.FAILED).only("error", "series__study_id").select_related("series"):
        out[run.series.study_id]["error"] = run.error
    return out
