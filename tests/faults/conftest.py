"""Real PostgreSQL and Redis servers of a test's own, which the test may stop, kill and restart.

The machine's shared servers (5432, 6379) are never touched: each fault test starts its own on a free
port in a temporary folder, with the Debian binaries (PostgreSQL as the ``postgres`` OS user when the
tests run as root, since initdb refuses root), and points a gunicorn server and a Celery worker at them.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import redis

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
ADMIN, ADMIN_PASSWORD = "fault-admin", "fault-admin-password-1"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """One PostgreSQL cluster in a temporary folder: ``stop()`` / ``start()`` / ``restart()`` / ``kill()``."""

    def __init__(self, bindir: Path, base: Path, port: int, as_user: str | None):
        self.bindir, self.base, self.port, self.as_user = bindir, base, port, as_user
        self.data, self.sock, self.log = base / "data", base / "sock", base / "postgres.log"
        self.url = f"postgres://postgres@127.0.0.1:{port}/radloop"

    def _run(self, tool: str, *args: str, timeout: float = 90) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self.start()
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE radloop")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: what ``pg_ctl restart -m fast`` and systemd do: active transactions are rolled back
        and every client connection is closed."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "restart")

    def query(self, sql: str, *params) -> list[tuple]:
        """Rows of one query on the app's database, read directly (the test process has no ORM on it)."""
        with psycopg.connect(self.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def private_postgres():
    bindir = _postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed under /usr/lib/postgresql/*/bin "
                    "(Debian package 'postgresql'): cannot run a private server to restart")
    as_user = None
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres OS user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' OS user to own a private PostgreSQL cluster")
        as_user = "postgres"
    base = Path(tempfile.mkdtemp(prefix="radloop-faults-pg-"))  # not under pytest's 0700 root tmp: postgres reads it
    base.chmod(0o755)
    (base / "sock").mkdir()
    if as_user:
        for path in (base, base / "sock"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    pg = PrivatePostgres(bindir, base, free_port(), as_user)
    try:
        pg.init()
        yield pg
    finally:
        try:
            pg.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(base, ignore_errors=True)


class PrivateRedis:
    """A redis-server of the test's own, with or without an append-only file."""

    def __init__(self, folder: Path, appendonly: bool):
        self.folder, self.appendonly, self.port = folder, appendonly, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.folder)],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url)

        def up():
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait_for(up, 20, "redis-server to start")

    def stop(self) -> None:
        """SIGTERM: Redis's own clean shutdown (with an append-only file, it is flushed first)."""
        self.proc.terminate()
        self.proc.wait(timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def make_redis(tmp_path):
    servers: list[PrivateRedis] = []

    def make(appendonly: bool = False) -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(servers)}", appendonly)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.proc and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)


def app_env(tmp_path: Path, database_url: str, redis_url: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, MEDIA_ROOT=str(tmp_path / "media"),
               RADLOOP_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="webapp.settings",
               **extra)
    return env


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_database(env: dict) -> None:
    """Migrate the private database and create one admin, as `make run` would."""
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "shell", "-c",
           "from webapp.accounts.services import ensure_role_groups, ensure_user; from webapp.accounts.models import Role;"
           f"ensure_role_groups(); ensure_user({ADMIN!r}, {ADMIN_PASSWORD!r}, Role.ADMIN)")


class Processes:
    """Subprocesses of one test (each in its own session), stopped at its end."""

    def __init__(self, folder: Path):
        self.folder, self.procs = folder, []

    def gunicorn(self, env: dict) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = self.folder / "gunicorn.log"
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf",
             "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
            cwd=ROOT, env={**env, "DICOMWEB_BASE_URL": f"{base}/dicomweb", "ACCESS_LOG": ""},
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)

        def up():
            if proc.poll() is not None:
                raise AssertionError("gunicorn died at start:\n" + log.read_text(errors="replace"))
            try:
                return urllib.request.urlopen(base + "/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait_for(up, 60, "gunicorn to start")
        return base

    def worker(self, env: dict, queues: str, name: str) -> subprocess.Popen:
        log = self.folder / f"worker-{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "--concurrency", "1",
             "--loglevel", "INFO", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        proc.log_path = log
        self.procs.append(proc)
        wait_for(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 90, "the worker to start")
        if proc.poll() is not None:
            raise AssertionError("worker died at start:\n" + log.read_text(errors="replace"))
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
    for log in sorted(tmp_path.glob("*.log")):  # shown under "Captured stdout teardown" when a test fails
        print(f"--- {log.name}\n" + log.read_text(errors="replace")[-6000:])
