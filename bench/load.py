#!/usr/bin/env python3
"""Load: 20 viewers opening studies and paging frames while one uploader sends 500 slices by STOW-RS.

    .venv/bin/python bench/load.py [--viewers 20] [--seconds 60] [--upload-slices 500]
                                   [--studies 3] [--study-slices 120] [--stow-batch 10]

Starts RadLoop under gunicorn the way `make run` serves it (webapp.gunicorn_conf: 3 workers x 4
threads, SQLite, archive on local disk, the filesystem broker; no Celery worker, so no inference
competes for the CPU) on 127.0.0.1 with a throw-away database and archive, seeds `--studies` phantom
CT studies (512 x 512) with `import_dicom`, then runs locust (as a library, headless) for at most
`--seconds`:

  viewer (x N)  what the viewer and the OHIF study list do: QIDO study list with includefield, QIDO
                series of one study, the series metadata, then every frame of the series in order
                (WADO-RS frames, Accept as Cornerstone sends it), one after another; 1-3 s pause,
                next study. Bearer token of a radiologist (readers' scripts do the same).
  uploader (x1) a 500-slice 512 x 512 phantom series by STOW-RS, `--stow-batch` instances per
                request, one request after another, as an uploader token (a PACS); stops after the
                last slice.

Prints requests and failures per kind, p50/p95/p99 frame latency (exact, from every frame request)
and the uploader's instances per second. Loopback traffic only. Asserts nothing; the goal is 0 errors.
"""
from __future__ import annotations

import locust  # noqa: F401  (first: gevent patches sockets and threads before anything else imports them)

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import gevent
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
STUDY_LIST = "/dicomweb/studies?limit=100&includefield=00081030,00080060,00201208"

# Filled in by main() before locust starts the users.
CONFIG: dict = {}
FRAME_MS: list[float] = []


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_phantoms(workdir: Path, studies: int, study_slices: int, upload_slices: int) -> tuple[list[Path], list[Path]]:
    """Seed studies (one phantom written under several patients) and the upload series (another)."""
    from ml.phantom import PhantomConfig, generate_phantom, write_dicom_series

    seed = generate_phantom(PhantomConfig.preset("full", n_slices=study_slices), seed=4242)
    folders = []
    for k in range(studies):
        folder = workdir / "seed" / f"study-{k}"
        write_dicom_series(seed, folder, patient_id=f"LOAD-{k}", patient_name=f"Load^Viewer{k}")
        folders.append(folder)
    upload = generate_phantom(PhantomConfig.preset("full", n_slices=upload_slices, slice_thickness_mm=0.625), seed=4343)
    paths = write_dicom_series(upload, workdir / "upload", patient_id="LOAD-UP", patient_name="Load^Upload")
    return folders, paths


def server_env(workdir: Path, base: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}  # as `make run`
    env.update(RADLOOP_VAR_DIR=str(workdir / "var"), MEDIA_ROOT=str(workdir / "media"),
               DICOMWEB_BASE_URL=f"{base}/dicomweb", DJANGO_SETTINGS_MODULE="webapp.settings",
               LOG_LEVEL="WARNING", ACCESS_LOG="", GUNICORN_LOG_LEVEL="warning")
    return env


def manage(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


TOKENS_SCRIPT = """
import json, secrets
from webapp.accounts.models import Role
from webapp.accounts.services import ensure_role_groups, ensure_user, issue_token
ensure_role_groups()
tokens = {"viewers": [], "uploader": None}
for i in range(VIEWERS):
    user, _ = ensure_user(f"load-reader-{i}", secrets.token_urlsafe(24), Role.RADIOLOGIST)
    tokens["viewers"].append(issue_token(user, "load bench")[1])
user, _ = ensure_user("load-pacs", secrets.token_urlsafe(24), Role.UPLOADER)
tokens["uploader"] = issue_token(user, "load bench")[1]
print(json.dumps(tokens))
"""


def start_gunicorn(env: dict, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited:\n" + log.read_text(errors="replace"))
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return proc
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not answer within 60 s")


def _tag(item: dict, tag: str):
    value = item.get(tag, {}).get("Value")
    return value[0] if value else None


class Viewer(FastHttpUser):
    wait_time = between(1, 3)

    def on_start(self):
        self.headers = {"Authorization": f"Bearer {CONFIG['viewer_tokens'].pop()}", "Accept": "application/dicom+json"}

    @task
    def open_a_study_and_page_its_frames(self):
        with self.client.get(STUDY_LIST, headers=self.headers, name="QIDO studies (includefield)", catch_response=True) as r:
            if r.status_code != 200:
                return r.failure(f"{r.status_code}")
            studies = [s for s in (_tag(x, "0020000D") for x in r.json()) if s]
        if not studies:
            return
        study = random.choice(studies)
        with self.client.get(f"/dicomweb/studies/{study}/series", headers=self.headers, name="QIDO series",
                             catch_response=True) as r:
            if r.status_code != 200:
                return r.failure(f"{r.status_code}")
            series = [s for s in (_tag(x, "0020000E") for x in r.json()) if s]
        if not series:
            return
        root = f"/dicomweb/studies/{study}/series/{series[0]}"
        with self.client.get(f"{root}/metadata", headers=self.headers, name="series metadata", catch_response=True) as r:
            if r.status_code != 200:
                return r.failure(f"{r.status_code}")
            instances = sorted(((_tag(x, "00200013") or 0, _tag(x, "00080018")) for x in r.json()), key=lambda t: t[0])
        frame_headers = {**self.headers, "Accept": CORNERSTONE_ACCEPT}
        for _, sop in instances:
            with self.client.get(f"{root}/instances/{sop}/frames/1", headers=frame_headers, name="frames",
                                 catch_response=True) as r:
                if r.status_code != 200 or len(r.content or b"") < 1000:
                    r.failure(f"{r.status_code}, {len(r.content or b'')} bytes")


class Uploader(FastHttpUser):
    fixed_count = 1
    wait_time = between(0, 0)

    def on_start(self):
        self.headers = {"Authorization": f"Bearer {CONFIG['uploader_token']}", "Accept": "application/dicom+json"}
        self.pending = list(CONFIG["upload_paths"])

    @task
    def store_a_batch(self):
        if not self.pending:
            CONFIG["upload_done_at"] = time.perf_counter()
            if not CONFIG["viewers"]:  # nothing else to measure
                gevent.spawn(self.environment.runner.quit)
            raise StopUser()
        CONFIG.setdefault("upload_started_at", time.perf_counter())
        batch, self.pending = self.pending[: CONFIG["stow_batch"]], self.pending[CONFIG["stow_batch"]:]
        boundary = uuid.uuid4().hex
        body = b"".join(b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), p.read_bytes())
                        for p in batch) + b"--%s--\r\n" % boundary.encode()
        headers = {**self.headers, "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
        with self.client.post("/dicomweb/studies", data=body, headers=headers, name="STOW-RS", catch_response=True) as r:
            stored = len((r.json() or {}).get("00081199", {}).get("Value", [])) if r.status_code == 200 else 0
            if stored != len(batch):
                r.failure(f"{r.status_code}: {stored} of {len(batch)} stored; {(r.text or '')[:200]}")
            CONFIG["uploaded"] = CONFIG.get("uploaded", 0) + stored


@events.request.add_listener
def _record_frame(request_type, name, response_time, response_length, exception, **kwargs):
    if name == "frames" and exception is None:
        FRAME_MS.append(response_time)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--upload-slices", type=int, default=500)
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--study-slices", type=int, default=120)
    parser.add_argument("--stow-batch", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (database, archive, gunicorn log)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="radloop-load-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = server_env(workdir, base)
    proc = None
    try:
        t0 = time.perf_counter()
        seed_folders, upload_paths = write_phantoms(workdir, args.studies, args.study_slices, args.upload_slices)
        manage(env, "migrate", "--noinput", "-v", "0")
        imported = manage(env, "import_dicom", *map(str, seed_folders)).strip()
        tokens = json.loads(manage(env, "shell", "-c", TOKENS_SCRIPT.replace("VIEWERS", str(args.viewers))).strip().splitlines()[-1])
        proc = start_gunicorn(env, port, workdir / "gunicorn.log")
        print(f"set-up {time.perf_counter() - t0:.0f} s: seeded {imported}; gunicorn on {base} "
              f"(WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '3')}, WEB_THREADS={os.environ.get('WEB_THREADS', '4')})")

        CONFIG.update(viewer_tokens=list(tokens["viewers"]), uploader_token=tokens["uploader"],
                      upload_paths=upload_paths, stow_batch=args.stow_batch, viewers=args.viewers)
        environment = Environment(user_classes=[Viewer, Uploader], host=base, events=events)
        runner = environment.create_local_runner()
        runner.start(args.viewers + 1, spawn_rate=args.viewers + 1)
        started = time.perf_counter()
        gevent.spawn_later(args.seconds, runner.quit)
        runner.greenlet.join()
        elapsed = time.perf_counter() - started
        report(environment, args, elapsed)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report(environment: Environment, args, elapsed: float) -> None:
    stats = environment.stats
    print(f"\n{args.viewers} viewers + 1 uploader for {elapsed:.1f} s on 127.0.0.1\n")
    print(f"{'request':<30}{'count':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}")
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        print(f"{entry.name:<30}{entry.num_requests:>8}{entry.num_failures:>8}"
              f"{entry.get_response_time_percentile(0.5):>9.0f}{entry.get_response_time_percentile(0.95):>9.0f}"
              f"{entry.get_response_time_percentile(0.99):>9.0f}{entry.num_requests / elapsed:>8.1f}")
    total = stats.total
    print(f"{'all':<30}{total.num_requests:>8}{total.num_failures:>8}")
    for error in stats.errors.values():
        print(f"  error x{error.occurrences}: {error.method} {error.name}: {error.error}")
    if FRAME_MS:
        print(f"\nframe latency (exact, {len(FRAME_MS)} frames): p50 {percentile(FRAME_MS, 0.5):.0f} ms, "
              f"p95 {percentile(FRAME_MS, 0.95):.0f} ms, p99 {percentile(FRAME_MS, 0.99):.0f} ms, "
              f"mean {statistics.fmean(FRAME_MS):.0f} ms; {len(FRAME_MS) / elapsed:.0f} frames/s")
    uploaded = CONFIG.get("uploaded", 0)
    start, done = CONFIG.get("upload_started_at"), CONFIG.get("upload_done_at")
    if start is not None:
        span = (done or time.perf_counter()) - start
        state = "all sent" if done else f"stopped by the time limit after {uploaded} of {args.upload_slices}"
        print(f"upload: {uploaded} instances stored in {span:.1f} s = {uploaded / span:.1f} instances/s ({state})")
    print(f"errors: {total.num_failures} of {total.num_requests} requests")


if __name__ == "__main__":
    main()
