#!/usr/bin/env python3
"""Viewer speed: time to the first image on screen and until the whole series is loaded (and the
MPR views are up), for a 200-slice 512×512 phantom CT, read from the browser's Performance API.

    .venv/bin/python bench/viewer.py [--slices 200] [--runs 3]

Runs RadLoop the way `make run` serves it (gunicorn + whitenoise over collected static files,
SQLite, local archive) in a temporary folder, and drives Debian's Chromium with Playwright (WebGL
through SwiftShader, as in the browser tests). Each run is a fresh browser context (empty HTTP
cache). The viewer sets performance marks; measures are from navigation start:
  radloop:first-image   the middle slice is on screen (painted by the page's tiny entry from the raw
                        frame before Cornerstone is evaluated, or by Cornerstone if that came first)
  radloop:viewer-image  Cornerstone's stack viewport has rendered it (it replaces the first paint)
  radloop:ready         findings, keyboard and mouse tools wired
  radloop:series-loaded every slice loaded (then the MPR views come up) Baseline in the same run: the same metadata + every frame
fetched by a plain HTTP client (8 connections), i.e. what the server alone needs. Asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dicomweb import CORNERSTONE_ACCEPT, wait_http  # noqa: E402
from ingest import free_port, make_series  # noqa: E402  (the same 512×512 phantom series)

USER, PASSWORD = "bench-radiologist", secrets.token_urlsafe(18)  # a fresh password each run
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]


def prepare(workdir: Path, slices: int) -> tuple[dict, str]:
    """Database, user and one ingested phantom study; returns the server environment and the study UID."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'radloop.sqlite3'}", RADLOOP_VAR_DIR=str(workdir / "var"),
        MEDIA_ROOT=str(workdir / "media"), STATIC_ROOT=str(workdir / "static"), LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="webapp.settings",
    )
    env.pop("REDIS_URL", None)
    os.environ.update(env)
    os.environ.pop("REDIS_URL", None)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    from webapp.accounts.services import ensure_role_groups, ensure_user
    from webapp.archive import services
    from webapp.archive.models import Study

    ensure_role_groups()
    ensure_user(USER, PASSWORD, "radiologist")
    t0 = time.perf_counter()
    paths = make_series(workdir / "dicom", slices)
    print(f"phantom: {len(paths)} slices written in {time.perf_counter() - t0:.1f} s", flush=True)
    batch = services.start_batch(None, "command")
    for p in paths:
        services.ingest_path(batch, p)
    return env, Study.objects.get().study_uid


def start_server(workdir: Path, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, "DICOMWEB_BASE_URL": f"{base}/dicomweb"}
    log = open(workdir / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "--access-logfile", "/dev/null"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"{base}/healthz", proc)
    return proc, base


def baseline_s(base: str, study_uid: str) -> float:
    """Metadata + every frame over 8 keep-alive connections, bytes only (no decoding, no drawing)."""
    s = requests.Session()
    login = s.get(f"{base}/login/")
    s.post(f"{base}/login/", data={"username": USER, "password": PASSWORD,
                                   "csrfmiddlewaretoken": s.cookies["csrftoken"]}, headers={"Referer": login.url})
    start = time.perf_counter()
    series = s.get(f"{base}/dicomweb/studies/{study_uid}/series", headers={"Accept": "application/dicom+json"}).json()
    series_uid = series[0]["0020000E"]["Value"][0]
    meta = s.get(f"{base}/dicomweb/studies/{study_uid}/series/{series_uid}/metadata",
                 headers={"Accept": "application/dicom+json"}).json()
    urls = [f"{base}/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{m['00080018']['Value'][0]}/frames/1"
            for m in meta]
    sessions = []
    for _ in range(8):
        c = requests.Session()
        c.cookies.update(s.cookies)
        sessions.append(c)

    def fetch(i_url):
        i, url = i_url
        r = sessions[i % 8].get(url, headers={"Accept": CORNERSTONE_ACCEPT})
        r.raise_for_status()
        return len(r.content)

    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(fetch, enumerate(urls)))
    elapsed = time.perf_counter() - start
    print(f"baseline: {len(urls)} frames, {total / 1e6:.1f} MB in {elapsed * 1000:.0f} ms")
    return elapsed


def browser_runs(base: str, study_uid: str, runs: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for run in range(runs):
            context = browser.new_context(base_url=base, viewport={"width": 1400, "height": 900},
                                          bypass_csp=True)  # wait_for_function eval()s, which the CSP refuses
            page = context.new_page()
            page.goto("/login/")
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/studies/")
            page.goto(f"/studies/{study_uid}/view/")
            page.wait_for_function("window.radloopViewer && window.radloopViewer.loaded", timeout=600_000)
            t = page.evaluate("window.radloopViewer.timings()")
            first_by = page.evaluate("performance.getEntriesByName('radloop:first-image', 'mark')[0].detail?.by")
            row = {"first": t["radloop:time-to-first-image"], "all": t["radloop:time-to-series-loaded"],
                   "viewer": t["radloop:time-to-viewer-image"], "ready": t["radloop:time-to-ready"], "by": first_by,
                   "mode": page.evaluate("window.radloopViewer.mode"), "errors": page.evaluate("window.radloopViewer.error")}
            print(f"run {run + 1}: first image {row['first']:.0f} ms (drawn by {first_by}), Cornerstone image "
                  f"{row['viewer']:.0f} ms, ready {row['ready']:.0f} ms, whole series {row['all']:.0f} ms "
                  f"(then {row['mode']}){'  error: ' + str(row['errors']) if row['errors'] else ''}; "
                  f"script started {t['radloop:script-start']:.0f} ms, metadata {t['radloop:metadata-loaded']:.0f} ms", flush=True)
            out.append(row)
            context.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (ROOT / "static" / "dist" / ".vite" / "manifest.json").exists():
        sys.exit("The viewer is not built: run `make setup` (or npm ci && npm run build in frontend/).")
    with tempfile.TemporaryDirectory(prefix="radloop-bench-viewer-") as tmp:
        workdir = Path(tmp)
        env, study_uid = prepare(workdir, args.slices)
        proc, base = start_server(workdir, env)
        try:
            baseline = baseline_s(base, study_uid)
            rows = browser_runs(base, study_uid, args.runs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    first = [r["first"] for r in rows]
    viewer = [r["viewer"] for r in rows]
    ready = [r["ready"] for r in rows]
    whole = [r["all"] for r in rows]
    print()
    print(f"Viewer, {args.slices} slices of 512×512, {args.runs} cold runs (fresh browser context each), Chromium + SwiftShader")
    print(f"  time to first image      median {statistics.median(first):7.0f} ms   (min {min(first):.0f}, max {max(first):.0f})")
    print(f"  time to Cornerstone image median {statistics.median(viewer):6.0f} ms   (min {min(viewer):.0f}, max {max(viewer):.0f})")
    print(f"  time to ready (tools)    median {statistics.median(ready):7.0f} ms   (min {min(ready):.0f}, max {max(ready):.0f})")
    print(f"  time to whole series     median {statistics.median(whole):7.0f} ms   (min {min(whole):.0f}, max {max(whole):.0f})")
    print(f"  baseline: same bytes by a plain HTTP client  {baseline * 1000:7.0f} ms")
    print(f"  whole series / baseline  {statistics.median(whole) / (baseline * 1000):.2f}x")


if __name__ == "__main__":
    main()
