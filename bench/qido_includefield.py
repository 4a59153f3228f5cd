#!/usr/bin/env python3
"""QIDO-RS study list with includefield (the OHIF Viewer's study-list query), cold and warm.

    .venv/bin/python bench/qido_includefield.py [--studies 100] [--slices 40] [--repeat 3]

Stores N small CT studies through the ingest service on a throw-away SQLite database and archive
under a temporary folder (DATABASE_URL is honoured if set: point it at a database you may wipe),
then times, through Django's full HTTP stack (test client, session login):

  ohif    GET /dicomweb/studies?limit=101&offset=0&fuzzymatching=false
              &includefield=00081030,00080060          (what OHIF sends for its study list)
  all     GET /dicomweb/studies?limit=101&includefield=all  (every attribute of a representative
              instance: the path that must read stored files)

"cold" deletes the stored series-metadata cache and Django's cache first; "warm" repeats the same
request right after. Then one more series, whose first instance's stored file is given a sequence of
--sequence-items items (written past ingest, as an older archive may hold it), and the time of its
WADO-RS series metadata, cold and warm. Prints milliseconds (median of --repeat); asserts nothing.
"""
from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ingest as ingest_bench  # noqa: E402

OHIF = {"limit": "101", "offset": "0", "fuzzymatching": "false", "includefield": "00081030,00080060"}
ALL = {"limit": "101", "includefield": "all"}


setup_django = ingest_bench.setup_django  # the same throw-away database and archive as bench/ingest.py


def load_studies(studies: int, slices: int) -> None:
    from tests.factories import ct_slice, to_bytes
    from webapp.archive import services
    from webapp.archive.models import Study

    Study.objects.all().delete()
    batch = services.start_batch(None, "command")
    for s in range(studies):
        for i in range(slices):
            ds = ct_slice(study=f"bench-{s}", series=f"bench-{s}-ct", index=i, rows=64, columns=64,
                          patient_id=f"B-{s:03d}", patient_name=f"Bench^{s:03d}", accession=f"A{s:04d}",
                          study_date=f"2025{1 + s % 12:02d}{1 + s % 28:02d}")
            outcome = services.ingest_stream(batch, f"{s}-{i}.dcm", io.BytesIO(to_bytes(ds)))
            assert outcome.outcome == "stored", outcome.reason


def add_big_sequence(items: int, slices: int) -> str:
    """A stored series whose first file holds a sequence of ``items`` items; its metadata URL."""
    import struct

    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.factories import ct_slice, to_bytes
    from webapp.archive import services
    from webapp.archive.models import Instance
    from webapp.archive.storage import archive_storage

    batch = services.start_batch(None, "command")
    for i in range(slices):
        ds = ct_slice(study="bench-seq", series="bench-seq-ct", index=i, rows=64, columns=64, patient_id="B-SEQ")
        services.ingest_stream(batch, f"seq-{i}.dcm", io.BytesIO(to_bytes(ds)))
    inst = Instance.objects.select_related("series__study").filter(series__study__patient_id="B-SEQ").order_by("instance_number").first()
    path = archive_storage().path(inst.file_path)
    ds = pydicom.dcmread(path)
    ds.ReferencedImageSequence = Sequence([Dataset() for _ in range(items)])
    for n, item in enumerate(ds.ReferencedImageSequence):
        item.ReferencedSOPInstanceUID = f"1.2.3.{n}"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    data = Path(path).read_bytes()
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    (length,) = struct.unpack("<I", data[at + 8 : at + 12])
    Instance.objects.filter(pk=inst.pk).update(pixel_data_offset=at + 12, pixel_data_length=length, file_size=len(data))
    return f"/dicomweb/studies/{inst.series.study.study_uid}/series/{inst.series.series_uid}/metadata"


def forget_caches() -> None:
    from django.core.cache import cache

    from webapp.archive.storage import archive_storage

    cache.clear()
    shutil.rmtree(Path(archive_storage().location) / "metadata", ignore_errors=True)


def timed(client, params: dict) -> tuple[float, int, int]:
    start = time.perf_counter()
    response = client.get("/dicomweb/studies", params)
    elapsed = (time.perf_counter() - start) * 1000
    count = len(response.json()) if response.status_code == 200 else 0
    return elapsed, response.status_code, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sequence-items", type=int, default=100_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="radloop-qido-bench-"))
    try:
        setup_django(workdir)
        from django.test import Client
        from django.test.utils import setup_test_environment

        from webapp.accounts.services import ensure_role_groups, ensure_user

        setup_test_environment()
        ensure_role_groups()
        admin, _ = ensure_user("bench-admin", secrets.token_urlsafe(18), "admin")  # logs in by force_login
        t0 = time.perf_counter()
        load_studies(args.studies, args.slices)
        print(f"stored {args.studies} studies x {args.slices} slices in {time.perf_counter() - t0:.1f} s")
        client = Client()
        client.force_login(admin)

        print(f"{'query':<6} {'cold ms':>10} {'warm ms':>10}  status  studies listed")
        for name, params in (("ohif", OHIF), ("all", ALL)):
            cold, warm = [], []
            for _ in range(args.repeat):
                forget_caches()
                ms, status, count = timed(client, params)
                cold.append(ms)
                ms, status, count = timed(client, params)
                warm.append(ms)
            print(f"{name:<6} {statistics.median(cold):>10.0f} {statistics.median(warm):>10.0f}  {status:>6}  {count}")

        url = add_big_sequence(args.sequence_items, args.slices)
        cold, warm = [], []
        for _ in range(args.repeat):
            forget_caches()
            start = time.perf_counter()
            response = client.get(url)
            cold.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            client.get(url)
            warm.append((time.perf_counter() - start) * 1000)
        print(f"series metadata, {args.slices} instances, one with a {args.sequence_items}-item sequence: "
              f"cold {statistics.median(cold):.0f} ms, warm {statistics.median(warm):.0f} ms, "
              f"status {response.status_code}, {len(response.json()) if response.status_code == 200 else 0} instances")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
