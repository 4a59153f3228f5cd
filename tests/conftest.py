"""Shared fixtures: the cast (an admin, two radiologists, an outsider) and a private archive."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from webapp.accounts.models import Role
from webapp.accounts.services import ensure_role_groups, ensure_user

PASSWORD = "correct-horse-battery"




@pytest.fixture(autouse=True)
def _real_postgres(request):
    if "django_db_setup" in request.fixturenames and connection.vendor != "postgresql":
        pytest.fail("tests run on PostgreSQL: use the README's test command (make test), which sets DATABASE_URL")


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Role and token look-ups are cached per process; no test sees another's."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def archive_dir(tmp_path, settings):
    """Every test gets its own archive folder."""
    root = tmp_path / "archive"
    settings.MEDIA_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "webapp.archive.storage.AtomicFileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


class Cast:
    def __init__(self):
        ensure_role_groups()
        self.admin, _ = ensure_user("alice-admin", PASSWORD, Role.ADMIN)
        self.radiologist, _ = ensure_user("rita-radiologist", PASSWORD, Role.RADIOLOGIST)
        self.radiologist2, _ = ensure_user("ravi-radiologist", PASSWORD, Role.RADIOLOGIST)
        from django.contrib.auth.models import User

        self.outsider = User.objects.create_user("oscar-outsider", password=PASSWORD)


@pytest.fixture
def cast(db) -> Cast:
    return Cast()


@pytest.fixture
def admin_client(client, cast):
    client.force_login(cast.admin)
    return client


@pytest.fixture
def radiologist_client(client, cast):
    client.force_login(cast.radiologist)
    return client


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server_env(tmp_path, transactional_db):
    """Environment for a separate process (web server, worker) that shares this test's database
    and archive folder. The test's data must be committed, hence the transactional database."""
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        MEDIA_ROOT=str(tmp_path),
        RADLOOP_VAR_DIR=str(tmp_path / "var"),
        PYTHONUNBUFFERED="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gunicorn_server(server_env, tmp_path):
    """The app served by gunicorn, as `make run` serves it (chunked request bodies work)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**server_env, "DICOMWEB_BASE_URL": f"{base}/dicomweb"}
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
            time.sleep(0.2)
    yield base
    proc.send_signal(signal.SIGQUIT)  # gunicorn's quick shutdown
    proc.wait(timeout=30)
    log.close()
    # shown by pytest under "Captured stdout teardown" when a test fails: a 500's traceback
    print("gunicorn log:\n" + (tmp_path / "gunicorn.log").read_text(errors="replace"))
