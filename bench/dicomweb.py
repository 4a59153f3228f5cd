#!/usr/bin/env python3
"""RadLoop's DICOMweb against Orthanc 1.10 + its DICOMweb plugin, same series, same run, same client.

    .venv/bin/python bench/dicomweb.py [--slices 200]

Starts Orthanc (Debian packages orthanc, orthanc-dicomweb; installed with apt-get if missing and
running as root) with its own throw-away config and storage, and RadLoop under gunicorn the way
`make run` serves it (3 workers, SQLite, local archive), both on 127.0.0.1 only. Loads the same
512×512 phantom series into each through STOW-RS, then measures each row for both servers and
prints the ratio (>1: RadLoop is faster). Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import free_port, make_series  # noqa: E402  (same phantom series as the ingest bench)

CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
PLAIN_ACCEPT = 'multipart/related; type="application/octet-stream"'


@dataclass
class Server:
    name: str
    root: str  # DICOMweb root URL
    headers: dict
    proc: subprocess.Popen
    frame_accept: str = CORNERSTONE_ACCEPT

    def session(self, gzip: bool) -> requests.Session:
        s = requests.Session()
        s.headers.update(self.headers)
        s.headers["Accept-Encoding"] = "gzip" if gzip else "identity"
        return s


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def start_orthanc(workdir: Path) -> Server:
    if not shutil.which("Orthanc"):
        subprocess.run(["apt-get", "install", "-y", "-q", "orthanc", "orthanc-dicomweb"], check=True)
    port = free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(workdir / "orthanc-db"), "IndexDirectory": str(workdir / "orthanc-db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "HttpServerEnabled": True, "StorageCompression": False, "HttpThreadsCount": 50,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": f"127.0.0.1:{port}"},
    }
    path = workdir / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(workdir / "orthanc.log", "wb")
    proc = subprocess.Popen(["Orthanc", str(path)], stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/system", proc)
    return Server("Orthanc", f"http://127.0.0.1:{port}/dicom-web", {}, proc)


def start_radloop(workdir: Path) -> Server:
    port = free_port()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'radloop.sqlite3'}", RADLOOP_VAR_DIR=str(workdir / "var"),
        MEDIA_ROOT=str(workdir / "media"), DICOMWEB_BASE_URL=f"http://127.0.0.1:{port}/dicomweb", LOG_LEVEL="WARNING",
    )
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    token = subprocess.run([py, "manage.py", "create_api_token", "bench", "--role", "admin"], cwd=ROOT, env=env,
                           check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    log = open(workdir / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [str(Path(py).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "--access-logfile", "/dev/null"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return Server("RadLoop", f"http://127.0.0.1:{port}/dicomweb", {"Authorization": f"Bearer {token}"}, proc)


# --- measurements ---------------------------------------------------------------------------------


def stow(server: Server, paths: list[Path], per_request: int = 25) -> float:
    s = server.session(gzip=False)
    start = time.perf_counter()
    for i in range(0, len(paths), per_request):
        boundary = uuid.uuid4().hex
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() + b"\r\n"
                        for p in paths[i : i + per_request]) + f"--{boundary}--\r\n".encode()
        r = s.post(f"{server.root}/studies", data=body,
                   headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                            "Accept": "application/dicom+json"})
        r.raise_for_status()
    return len(paths) / (time.perf_counter() - start)


def median_ms(fn, n: int = 15) -> float:
    fn()  # warm
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def get_json(s: requests.Session, url: str, params=None):
    r = s.get(url, params=params, headers={"Accept": "application/dicom+json"})
    r.raise_for_status()
    return r.json() if r.content else []


def frame_urls(server: Server, study: str, series: str, sops: list[str]) -> list[str]:
    return [f"{server.root}/studies/{study}/series/{series}/instances/{sop}/frames/1" for sop in sops]


def fetch_frames(server: Server, urls: list[str], clients: int, gzip: bool) -> tuple[float, float, float]:
    """(frames/s, MB/s, seconds to the first frame) fetching every URL with `clients` threads."""
    sessions = [server.session(gzip) for _ in range(clients)]
    first = []
    start = time.perf_counter()

    def work(i_url):
        i, url = i_url
        r = sessions[i % clients].get(url, headers={"Accept": server.frame_accept})
        r.raise_for_status()
        if not first:
            first.append(time.perf_counter() - start)
        return len(r.content)

    with ThreadPoolExecutor(clients) as pool:
        sizes = list(pool.map(work, enumerate(urls)))
    elapsed = time.perf_counter() - start
    return len(urls) / elapsed, sum(sizes) / 2**20 / elapsed, first[0] if first else elapsed


def rendered_per_s(server: Server, study: str, series: str, sops: list[str], mime: str) -> float:
    s = server.session(gzip=False)
    start = time.perf_counter()
    for sop in sops:
        r = s.get(f"{server.root}/studies/{study}/series/{series}/instances/{sop}/frames/1/rendered", headers={"Accept": mime})
        r.raise_for_status()
    return len(sops) / (time.perf_counter() - start)


def measure(server: Server, paths: list[Path], study: str, series: str) -> dict[str, float]:
    rows: dict[str, float] = {}
    rows["STOW-RS (instances/s)"] = stow(server, paths)
    s = server.session(gzip=True)
    rows["QIDO studies (ms)"] = median_ms(lambda: get_json(s, f"{server.root}/studies"))
    rows["QIDO series of a study (ms)"] = median_ms(lambda: get_json(s, f"{server.root}/studies/{study}/series"))
    rows["QIDO instances of a series (ms)"] = median_ms(lambda: get_json(s, f"{server.root}/studies/{study}/series/{series}/instances"))
    rows["series metadata, warm (ms)"] = median_ms(lambda: get_json(s, f"{server.root}/studies/{study}/series/{series}/metadata"), 10)
    meta = get_json(s, f"{server.root}/studies/{study}/series/{series}/metadata")
    sops = [m["00080018"]["Value"][0] for m in meta]
    urls = frame_urls(server, study, series, sops)
    probe = server.session(False).get(urls[0], headers={"Accept": server.frame_accept})
    if probe.status_code >= 400:  # Orthanc 1.10 refuses transfer-syntax=*; ask the plain way instead
        server.frame_accept = PLAIN_ACCEPT
    for gzip in (False, True):
        tag = "gzip" if gzip else "no gzip"
        for clients in (1, 4, 8):
            fps, mbps, _ = fetch_frames(server, urls, clients, gzip)
            rows[f"frames, {clients} client(s), {tag} (frames/s)"] = fps
            rows[f"frames, {clients} client(s), {tag} (MB/s)"] = mbps
    rows["rendered JPEG (images/s)"] = rendered_per_s(server, study, series, sops[:40], "image/jpeg")
    rows["rendered PNG (images/s)"] = rendered_per_s(server, study, series, sops[:20], "image/png")
    for gzip in (False, True):
        tag = "gzip" if gzip else "no gzip"
        s2 = server.session(gzip)
        start = time.perf_counter()
        get_json(s2, f"{server.root}/studies/{study}/series/{series}/instances")
        get_json(s2, f"{server.root}/studies/{study}/series/{series}/metadata")
        before_frames = time.perf_counter() - start
        _, _, first = fetch_frames(server, urls, 6, gzip)
        rows[f"viewer open, {tag}: first frame (s)"] = before_frames + first
        rows[f"viewer open, {tag}: last frame (s)"] = time.perf_counter() - start
    return rows


def higher_is_better(row: str) -> bool:
    return "/s)" in row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radloop-dwbench-") as tmp:
        workdir = Path(tmp)
        paths = make_series(workdir / "series", args.slices)
        import pydicom

        first = pydicom.dcmread(paths[0], stop_before_pixels=True)
        study, series = first.StudyInstanceUID, first.SeriesInstanceUID
        print(f"series: {len(paths)} × {first.Rows}×{first.Columns}, {sum(p.stat().st_size for p in paths) / 2**20:.0f} MB")
        results = {}
        for start in (start_orthanc, start_radloop):
            server = start(workdir)
            try:
                results[server.name] = measure(server, paths, study, series)
                print(f"{server.name}: done (frames asked as {server.frame_accept!r})")
            finally:
                server.proc.terminate()
                server.proc.wait(timeout=30)
        print(f"\n{'measure':<44} {'Orthanc':>10} {'RadLoop':>10} {'RadLoop speed-up':>17}")
        for row in results["RadLoop"]:
            o, r = results["Orthanc"][row], results["RadLoop"][row]
            ratio = (r / o) if higher_is_better(row) else (o / r)
            print(f"{row:<44} {o:10.1f} {r:10.1f} {ratio:16.1f}×")


if __name__ == "__main__":
    main()
