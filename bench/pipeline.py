#!/usr/bin/env python3
"""Upload-to-findings latency, stage by stage, and throughput with 1 vs 2 workers.

    .venv/bin/python bench/pipeline.py [--slices 200] [--studies 10]

Runs the embedded configuration of `make run` (SQLite, filesystem broker, real Celery worker
processes) in a temporary folder. Latency: one phantom CT through ingest -> prepare_series ->
infer_series (volume, detection, segmentation) -> findings stored. Throughput: N studies queued at
once, drained by 1 worker process, then by 2. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup(workdir: Path) -> None:
    os.environ.update(
        DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}"),
        RADLOOP_VAR_DIR=str(workdir / "var"), MEDIA_ROOT=str(workdir / "media"), LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="webapp.settings",
    )
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_study(folder: Path, seed: int, slices: int, patient_id: str) -> list[Path]:
    from ml.phantom import PhantomConfig, generate_phantom, write_dicom_series

    ph = generate_phantom(PhantomConfig.preset("full", n_slices=slices), seed=seed)
    return write_dicom_series(ph, folder, patient_id=patient_id, patient_name=f"Bench^{patient_id}")


def start_workers(n: int, workdir: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(n):
        log = open(workdir / f"worker{i}.log", "wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "cpu,gpu", "--concurrency", "1",
             "--hostname", f"bench{i}@%h", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT))
    return procs


def stop(procs) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=60)


def wait_done(expected: int, timeout: float = 3600) -> None:
    from webapp.modelops.models import InferenceRun

    deadline = time.monotonic() + timeout
    while InferenceRun.objects.filter(state__in=["done", "failed"]).count() < expected:
        if time.monotonic() > deadline:
            raise TimeoutError("runs did not finish")
        time.sleep(0.5)


def ingest(paths: list[Path]):
    from webapp.archive import services

    batch = services.start_batch(None, "command")
    for p in paths:
        services.ingest_path(batch, p)
    return batch


def latency(workdir: Path, slices: int) -> None:
    from webapp.archive import services
    from webapp.modelops.models import InferenceRun

    paths = make_study(workdir / "lat", 9000, slices, "LAT-1")
    workers = start_workers(1, workdir)
    try:
        time.sleep(8)  # worker start-up (imports) is not part of a study's latency
        t0 = time.perf_counter()
        batch = ingest(paths)
        t_ingest = time.perf_counter() - t0
        services.finish_batch(batch)
        wait_done(1)
        total = time.perf_counter() - t0
    finally:
        stop(workers)
    run = InferenceRun.objects.get()
    batch.refresh_from_db()
    t = run.timings
    print(f"\nUpload-to-findings, one {slices}-slice 512×512 phantom CT ({run.findings_count} findings, device {run.device}):")
    rows = [("ingest (service, all files)", t_ingest),
            ("prepare_series (geometry, thumbnail) + queueing", (run.queued_at - batch.finished_at).total_seconds()),
            ("waiting for the gpu queue", (run.started_at - run.queued_at).total_seconds()),
            ("  load volume (HU, geometry)", t.get("load_volume", 0)),
            ("  detection (incl. preprocessing)", t.get("preprocess", 0) + t.get("detect", 0)),
            ("  segmentation + measurement", t.get("segment", 0)),
            ("  store findings", t.get("store", 0)),
            ("inference run total (claim to done)", (run.finished_at - run.started_at).total_seconds()),
            ("upload start to findings stored", total)]
    for name, seconds in rows:
        print(f"  {name:<48} {seconds:7.2f} s")


def throughput(workdir: Path, slices: int, studies: int) -> None:
    from webapp.archive.models import Series
    from webapp.modelops import services as modelops
    from webapp.modelops.models import InferenceRun

    folders = []
    for i in range(studies):
        folders.append(make_study(workdir / f"tp{i}", 9100 + i, slices, f"TP-{i:02d}"))
    for paths in folders:
        ingest(paths)
    print(f"\nThroughput, {studies} studies of {slices} slices queued at once:")
    for n in (1, 2):
        InferenceRun.objects.all().delete()
        for series in Series.objects.filter(study__patient_id__startswith="TP-"):
            modelops.prepare_and_queue(series.pk)
        workers = start_workers(n, workdir)
        try:
            t0 = time.perf_counter()
            wait_done(studies)
            elapsed = time.perf_counter() - t0
        finally:
            stop(workers)
        print(f"  {n} worker process(es): {elapsed:7.1f} s, {studies / elapsed * 60:5.2f} studies/min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radloop-pipeline-") as tmp:
        workdir = Path(tmp)
        setup(workdir)
        latency(workdir, args.slices)
        if not args.skip_throughput:
            from webapp.modelops.models import InferenceRun

            InferenceRun.objects.all().delete()
            throughput(workdir, args.slices, args.studies)


if __name__ == "__main__":
    main()
