#!/usr/bin/env python3
"""Ingest speed for one 200-slice 512×512 phantom CT series, as ratios to the raw pydicom floor.

    .venv/bin/python bench/ingest.py [--slices 200] [--http-parallel 2]

Three figures from one run, on the same files:
  raw floor   read every file with pydicom (header + pixel bytes, no decode): the least any
              DICOM-aware ingest must do;
  service     webapp.archive.services.ingest_path (validate, hash, atomic write, DB rows);
  HTTP        the browser's protocol (batches of files per multipart POST, 2 in flight) against
              gunicorn started the way `make run` starts it.
Runs on a throw-away SQLite database and archive under a temporary folder (DATABASE_URL is
honoured if set). Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A fresh password each run: no known login is left in whatever database the bench used.
BENCH_PASSWORD = secrets.token_urlsafe(18)
sys.path.insert(0, str(ROOT))


def make_series(folder: Path, slices: int) -> list[Path]:
    from ml.phantom import PhantomConfig, generate_phantom, write_dicom_series

    cfg = PhantomConfig.preset("full", n_slices=slices, slice_thickness_mm=1.25)
    phantom = generate_phantom(cfg, seed=4242)
    return write_dicom_series(phantom, folder, patient_id="BENCH-1", patient_name="Bench^Ingest")


def raw_floor(paths: list[Path]) -> float:
    import pydicom

    start = time.perf_counter()
    for path in paths:
        ds = pydicom.dcmread(path)
        _ = ds.PixelData
    return time.perf_counter() - start


def setup_django(workdir: Path) -> None:
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
    os.environ["RADLOOP_VAR_DIR"] = str(workdir / "var")
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from webapp.accounts.services import ensure_role_groups, ensure_user

    ensure_role_groups()
    user, _ = ensure_user("bench-admin", BENCH_PASSWORD, "admin")
    user.set_password(BENCH_PASSWORD)
    user.save(update_fields=["password"])


def wipe_archive() -> None:
    from webapp.archive.models import Study, UploadBatch
    from webapp.archive.storage import archive_storage

    Study.objects.all().delete()
    UploadBatch.objects.all().delete()
    shutil.rmtree(archive_storage().location, ignore_errors=True)


def via_service(paths: list[Path]) -> float:
    from webapp.archive import services

    batch = services.start_batch(None, "command")
    start = time.perf_counter()
    outcomes = [o for p in paths for o in services.ingest_path(batch, p)]
    elapsed = time.perf_counter() - start
    assert all(o.outcome == "stored" for o in outcomes), {o.outcome for o in outcomes}
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken")

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        with self.opener.open(req, timeout=600) as resp:
            return resp.read()

    def login(self, username: str, password: str) -> None:
        self.request("/login/")
        body = f"username={username}&password={password}&csrfmiddlewaretoken={self.csrf()}".encode()
        self.request("/login/", body, {"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + "/login/"})

    def post_files(self, path: str, files: list[Path]) -> dict:
        boundary = uuid.uuid4().hex
        parts = []
        for f in files:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{f.name}"\r\n'
                f"Content-Type: application/dicom\r\n\r\n".encode() + f.read_bytes() + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return json.loads(self.request(path, body, self._post_headers(f"multipart/form-data; boundary={boundary}")))

    def post(self, path: str) -> dict:
        return json.loads(self.request(path, b"", self._post_headers("application/json")))

    def _post_headers(self, content_type: str) -> dict:
        return {"Content-Type": content_type, "X-CSRFToken": self.csrf(), "Referer": self.base + "/"}


def peak_rss_mb(master_pid: int) -> float:
    """Largest peak resident memory (VmHWM) among the gunicorn master's worker processes."""
    peak = 0
    for stat in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in stat.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(master_pid) and "VmHWM" in fields:
            peak = max(peak, int(fields["VmHWM"].split()[0]))
    return peak / 1024


def zip_of(paths: list[Path], target: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for p in paths:
            zf.write(p, f"study/{p.name}")
    return target


def via_http(paths: list[Path], parallel: int, per_request: int, stats: dict) -> float:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--access-logfile", "/dev/null"],
        cwd=ROOT, env=dict(os.environ),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        client = Client(base)
        client.login("bench-admin", BENCH_PASSWORD)
        start = time.perf_counter()
        batch = client.post("/upload/batches/")["batch"]
        groups = [paths[i : i + per_request] for i in range(0, len(paths), per_request)]
        with ThreadPoolExecutor(parallel) as pool:
            results = list(pool.map(lambda g: client.post_files(f"/upload/batches/{batch}/files", g), groups))
        summary = client.post(f"/upload/batches/{batch}/finish")
        elapsed = time.perf_counter() - start
        stored = sum(r["outcome"] == "stored" for res in results for r in res["results"])
        assert stored == summary["counts"]["stored"], summary
        stats["peak_rss_mb"] = peak_rss_mb(server.pid)
        return elapsed
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--http-parallel", type=int, default=2)
    parser.add_argument("--per-request", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radloop-bench-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        paths = make_series(workdir / "series", args.slices)
        megabytes = sum(p.stat().st_size for p in paths) / 2**20
        print(f"phantom: {len(paths)} files, {megabytes:.1f} MB, generated in {time.perf_counter() - t0:.1f} s")
        setup_django(workdir)
        from django.conf import settings

        print(f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, cpus: {os.cpu_count()}")
        rows = [("raw floor (pydicom read, best of 3)", min(raw_floor(paths) for _ in range(3)))]
        rows.append(("ingest service", via_service(paths)))
        wipe_archive()
        files_stats: dict = {}
        rows.append((f"HTTP upload ({args.per_request} files/request, {args.http_parallel} parallel)",
                     via_http(paths, args.http_parallel, args.per_request, files_stats)))
        wipe_archive()
        archive = zip_of(paths, workdir / "study.zip")
        zip_stats: dict = {}
        rows.append((f"HTTP upload (one {archive.stat().st_size / 2**20:.0f} MB zip)", via_http([archive], 1, 1, zip_stats)))
        floor = rows[0][1]
        print(f"\n{'path':<46} {'seconds':>8} {'inst/s':>8} {'MB/s':>7} {'x floor time':>13}")
        for name, seconds in rows:
            print(f"{name:<46} {seconds:8.2f} {len(paths) / seconds:8.0f} {megabytes / seconds:7.1f} {seconds / floor:13.1f}")
        print(f"\npeak RSS of a web worker: {files_stats['peak_rss_mb']:.0f} MB (file batches), "
              f"{zip_stats['peak_rss_mb']:.0f} MB (zip of {megabytes:.0f} MB): uploads stream, they are not buffered")


if __name__ == "__main__":
    main()
