"""PostgreSQL restarts in the middle of a 200-slice browser upload: the upload page's retries (and the
user re-sending what it reported as failed) end with every instance stored exactly once, its file
intact, no stray file in the archive, and a server that answers without being restarted itself."""
from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.factories import ct_slice, to_bytes
from tests.faults.conftest import ADMIN, ADMIN_PASSWORD, app_env, prepare_database, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.worker]

SLICES = 200
# static/js/upload.js: at most 32 files a request, two requests in flight, three attempts a request
# (1 s, then 2 s apart) for network errors and 5xx, none for a 4xx.
MAX_REQUEST_FILES, PARALLEL, RETRIES = 32, 2, 3
OUTAGE_SECONDS = 2.0


class UploadPage:
    """What static/js/upload.js does, over HTTP with a logged-in session."""

    def __init__(self, base: str):
        self.base = base
        self.session = requests.Session()
        self.session.get(f"{base}/login/", timeout=30)
        answer = self.session.post(f"{base}/login/", data={"username": ADMIN, "password": ADMIN_PASSWORD,
                                                          "csrfmiddlewaretoken": self.session.cookies["csrftoken"]},
                                   timeout=30)
        assert answer.ok and "sessionid" in self.session.cookies, answer.text[:500]
        self.failed_attempts: list[str] = []  # what the outage cost: answers that were retried or gave up

    def _headers(self) -> dict:
        return {"X-CSRFToken": self.session.cookies["csrftoken"]}

    def upload(self, files: list[tuple[str, bytes]], before_request=lambda index: None) -> dict[str, dict]:
        """One upload: a batch, the files in requests of 32 (two at a time, retried), then finish.
        Returns each file's outcome; a request that failed three times reports its files as failed.
        ``before_request(index)`` is called before each request is first sent."""
        batch = self.session.post(f"{self.base}/upload/batches/", headers=self._headers(), timeout=30).json()["batch"]
        url = f"{self.base}/upload/batches/{batch}/files"
        groups = [files[i : i + MAX_REQUEST_FILES] for i in range(0, len(files), MAX_REQUEST_FILES)]
        outcomes: dict[str, dict] = {}

        def send(index, group):
            before_request(index)
            for attempt in range(1, RETRIES + 1):
                status = None
                try:
                    answer = self.session.post(url, headers=self._headers(), timeout=120,
                                               data={"paths": [name for name, _ in group]},
                                               files=[("files", (name, data, "application/dicom")) for name, data in group])
                    status = answer.status_code
                    if answer.ok:
                        for result in answer.json()["results"]:
                            outcomes[result["name"]] = result
                        return
                    self.failed_attempts.append(f"{status} {answer.text[:200]}")
                except requests.ConnectionError as exc:
                    self.failed_attempts.append(f"network error: {exc}")
                if attempt == RETRIES or (status is not None and status < 500):
                    break
                time.sleep(1.0 * attempt)
            for name, _ in group:
                outcomes[name] = {"name": name, "outcome": "rejected", "reason": f"upload failed: {status}"}

        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(send, range(len(groups)), groups))
        finish = self.session.post(f"{self.base}/upload/batches/{batch}/finish", headers=self._headers(), timeout=60)
        assert finish.ok, finish.text[:500]
        return outcomes


def _archive_files(media: Path) -> dict[str, str]:
    """Every DICOM file in the archive (relative path -> SHA-256), staging folder included."""
    root = media / "archive"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0] == "thumbnails"}


def test_a_postgres_restart_during_a_200_slice_upload_loses_and_doubles_nothing(private_postgres, make_redis,
                                                                                processes, tmp_path):
    pg = private_postgres
    env = app_env(tmp_path, pg.url, make_redis().url)
    prepare_database(env)
    base = processes.gunicorn(env)
    processes.worker(env, "cpu", "prep")  # prepares the series after the upload (the gpu queue stays unread)
    files = [(f"ct/{i:03d}.dcm", to_bytes(ct_slice(study="fault-pg", series="fault-pg-axial", index=i,
                                                   rows=64, columns=64, patient_id="FAULT-PG")))
             for i in range(SLICES)]
    sha_by_name = {name: hashlib.sha256(data).hexdigest() for name, data in files}
    page = UploadPage(base)

    under_way, down = threading.Event(), threading.Event()
    fault_errors: list[BaseException] = []

    def outage():  # PostgreSQL goes down (fast shutdown) while the second request may be in flight
        try:
            under_way.wait(60)
            pg.stop("fast")
            down.set()
            time.sleep(OUTAGE_SECONDS)
            pg.start()
        except BaseException as exc:
            fault_errors.append(exc)
            down.set()

    def before_request(index):  # the first two requests go out; the third waits for the outage
        if index == 1:
            under_way.set()
        elif index >= 2:
            down.wait(60)

    fault = threading.Thread(target=outage)
    fault.start()
    outcomes = page.upload(files, before_request)
    fault.join(120)
    assert not fault.is_alive() and not fault_errors, fault_errors

    assert page.failed_attempts, "the outage never reached the upload: the test proved nothing"
    # The user sees the files the page reported as failed and uploads them again.
    failed = [(name, data) for name, data in files if outcomes[name]["outcome"] not in ("stored", "duplicate")]
    if failed:
        outcomes.update(page.upload(failed))
    print(f"{len(page.failed_attempts)} failed request(s) during the outage, {len(failed)} file(s) re-sent by the user:",
          *sorted({a[:80] for a in page.failed_attempts}), sep="\n  ")
    assert {name: o["outcome"] for name, o in outcomes.items() if o["outcome"] not in ("stored", "duplicate")} == {}

    rows = pg.query("SELECT sop_uid, sha256, file_path FROM archive_instance")
    assert len(rows) == SLICES  # nothing lost, nothing doubled (SOP UIDs are unique)
    assert len({sop for sop, _, _ in rows}) == SLICES
    assert sorted(sha for _, sha, _ in rows) == sorted(sha_by_name.values())
    on_disk = _archive_files(Path(env["MEDIA_ROOT"]))
    assert on_disk == {path: sha for _, sha, path in rows}  # every file intact; no orphan, no staging leftover

    # The server was not restarted: every request now answers, on every gunicorn thread, first time.
    def read(_):
        with requests.Session() as s:
            s.cookies.update(page.session.cookies)
            return [s.get(f"{base}/studies/", timeout=30).status_code for _ in range(4)]

    with ThreadPoolExecutor(8) as pool:
        assert {code for codes in pool.map(read, range(8)) for code in codes} == {200}
    listing = page.session.get(f"{base}/studies/", timeout=30)
    assert "FAULT-PG" in listing.text
    # The worker (also cut off from the database) prepares the series once the upload finishes.
    wait_for(lambda: pg.query("SELECT count(*) FROM archive_series WHERE prepared_at IS NOT NULL")[0][0] == 1,
             90, "the worker to prepare the uploaded series")
