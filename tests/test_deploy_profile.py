"""The production profile (DEPLOYMENT=production) and the modes of what the app creates under var/.

Settings are read once per process, so each case starts a fresh Python process with its own
environment, as gunicorn or a Celery worker would.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management.utils import get_random_secret_key
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
HOST = "radloop.example.org"


def _base_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DEPLOYMENT", "SECRET_KEY", "SECRET_KEY_FILE", "ALLOWED_HOSTS", "DEBUG", "DICOMWEB_BASE_URL",
                        "RADLOOP_UMASK", "REDIS_URL", "DJANGO_SETTINGS_MODULE",
                        # set by tests/browser/conftest.py for Playwright; no server process has it
                        "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update(RADLOOP_VAR_DIR=str(tmp_path / "var"), MEDIA_ROOT=str(tmp_path / "media"), PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def production_env(tmp_path) -> dict:
    return {**_base_env(tmp_path), "DEPLOYMENT": "production", "SECRET_KEY": get_random_secret_key(),
            "ALLOWED_HOSTS": HOST, "DICOMWEB_BASE_URL": f"https://{HOST}/dicomweb",
            "REDIS_URL": "redis://127.0.0.1:6379/7"}


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_check_deploy_gives_no_warnings_in_production(production_env):
    result = manage(production_env, "check", "--deploy")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output and "security.W" not in output
    assert "System check identified no issues" in output


def test_check_deploy_warns_in_development(tmp_path):
    """The same check without the profile finds what the profile fixes (so the test above can fail)."""
    output = manage(_base_env(tmp_path), "check", "--deploy").stdout + manage(_base_env(tmp_path), "check", "--deploy").stderr
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in output


@pytest.mark.parametrize("change, reason", [
    ({"SECRET_KEY": ""}, "needs a strong SECRET_KEY"),
    ({"SECRET_KEY": "too-short-but-random-4f9a"}, "needs a strong SECRET_KEY"),
    ({"SECRET_KEY": "django-insecure-" + "x8#kq2!vz0p" * 5}, "not Django's 'django-insecure-' default"),
    ({"SECRET_KEY": "a" * 60}, "at least 5 different ones"),
    ({"ALLOWED_HOSTS": "*"}, "needs ALLOWED_HOSTS set"),
    ({"ALLOWED_HOSTS": f"{HOST},*"}, "no '*'"),
    ({"ALLOWED_HOSTS": ""}, "needs ALLOWED_HOSTS set"),
    ({"DEBUG": "true"}, "refuses DEBUG=true"),
    ({"DICOMWEB_BASE_URL": f"http://{HOST}/dicomweb"}, "DICOMWEB_BASE_URL"),
    ({"DEPLOYMENT": "prod"}, "use 'development' or 'production'"),
])
def test_production_refuses_to_start_with_an_unsafe_setting(production_env, change, reason):
    env = {k: v for k, v in {**production_env, **change}.items() if v != ""}

    result = manage(env, "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and reason in result.stderr


def test_production_reads_the_secret_from_a_file_and_never_writes_one(production_env, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(get_random_secret_key() + "\n")
    env = {k: v for k, v in production_env.items() if k != "SECRET_KEY"} | {"SECRET_KEY_FILE": str(secret)}

    result = manage(env, "check", "--deploy")

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


PROBE = """
import json, django
django.setup()
from django.test import Client
c = Client()
def seen(r):
    return {"status": r.status_code, "location": r.get("Location", ""), "headers": dict(r.headers),
            "cookies": {k: {"secure": bool(v["secure"]), "httponly": bool(v["httponly"])} for k, v in r.cookies.items()}}
print(json.dumps({
    "plain": seen(c.get("/accounts/login/", HTTP_HOST="%(host)s")),
    "proxied": seen(c.get("/accounts/login/", HTTP_HOST="%(host)s", HTTP_X_FORWARDED_PROTO="https")),
    "health": seen(c.get("/healthz", HTTP_HOST="%(host)s")),
}))
"""


def test_production_pages_are_https_only_with_hsts_csp_and_secure_cookies(production_env, db):
    settings_db = connection.settings_dict  # the test database: the login page reads no rows, but may connect
    env = {**production_env, "DJANGO_SETTINGS_MODULE": "webapp.settings",
           "DATABASE_URL": f"postgres://{settings_db['USER'] or 'postgres'}@{settings_db['HOST'] or '127.0.0.1'}:"
                           f"{settings_db['PORT'] or 5432}/{settings_db['NAME']}"}
    from django.urls import reverse

    login = reverse("login")
    result = subprocess.run([sys.executable, "-c", PROBE.replace("/accounts/login/", login) % {"host": HOST}],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["plain"]["status"] == 301 and seen["plain"]["location"] == f"https://{HOST}{login}"
    page = seen["proxied"]
    assert page["status"] == 200
    assert page["headers"]["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert "script-src 'self'" in page["headers"]["Content-Security-Policy"]
    assert "Content-Security-Policy-Report-Only" not in page["headers"]
    assert page["headers"]["X-Frame-Options"] == "DENY"
    assert page["headers"]["X-Content-Type-Options"] == "nosniff"
    assert page["cookies"]["csrftoken"]["secure"]
    assert seen["health"]["status"] == 200  # the local health check is not redirected


# --- file modes under var/ -------------------------------------------------------------------------


WRITE_AS_THE_APP = """
import django, os
django.setup()
from django.conf import settings
from pathlib import Path
from ml.checkpoint import save_model_file
from webapp.archive.storage import AtomicFileSystemStorage
from django.core.files.base import ContentFile
# what workers write: a model file, an archived instance in a new folder, a thumbnail, a log
save_model_file(settings.VAR_DIR / "models" / "m.pt", {"format": "radloop-ml/1", "models": {}})
storage = AtomicFileSystemStorage(location=str(settings.MEDIA_ROOT / "archive"))
storage.save("1.2.3/4.5.6/7.8.9.dcm", ContentFile(b"DICM"))
storage.save("1.2.3/4.5.6/thumbnail.png", ContentFile(b"PNG"))
fd, tmp = storage.incoming_file()
os.close(fd)
storage.commit_incoming(tmp, "1.2.3/4.5.6/in.dcm")
(settings.VAR_DIR / "logs").mkdir()
(settings.VAR_DIR / "logs" / "worker.log").write_text("started")
"""


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_what_the_app_creates_under_var_is_private_to_its_user(tmp_path):
    env = {**_base_env(tmp_path), "MEDIA_ROOT": str(tmp_path / "var" / "media"), "DJANGO_SETTINGS_MODULE": "webapp.settings"}

    first = manage(env, "check")  # settings make var/, the secret key and the broker folders
    wrote = subprocess.run([sys.executable, "-c", WRITE_AS_THE_APP], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)

    assert first.returncode == 0 and wrote.returncode == 0, first.stderr + wrote.stderr
    found = modes(tmp_path / "var")
    for name in ("secret_key", "models/m.pt", "media/archive/1.2.3/4.5.6/7.8.9.dcm", "media/archive/1.2.3/4.5.6/in.dcm",
                 "media/archive/1.2.3/4.5.6/thumbnail.png", "logs/worker.log"):
        assert found.pop(name) == 0o600, name
    assert found["broker/queue"] == 0o700 and found["media/archive/1.2.3"] == 0o700
    assert {name: oct(mode) for name, mode in found.items() if mode != 0o700} == {}  # every other entry is a folder


def test_an_existing_open_var_folder_is_tightened(tmp_path):
    var = tmp_path / "var"
    (var / "broker" / "queue").mkdir(parents=True)
    for folder in (var, var / "broker", var / "broker" / "queue"):
        folder.chmod(0o755)

    assert manage(_base_env(tmp_path), "check").returncode == 0

    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert stat.S_IMODE((var / "broker" / "queue").stat().st_mode) == 0o700
