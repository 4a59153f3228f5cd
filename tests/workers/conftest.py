"""A real Celery worker process on the real Redis broker, against the test database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def clean_broker():
    if not settings.REDIS_URL:
        pytest.fail("worker tests need REDIS_URL (the README's test command sets it)")
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield settings.REDIS_URL


@pytest.fixture
def worker_env(server_env, clean_broker):
    return {**server_env, "REDIS_URL": clean_broker}


@pytest.fixture
def start_worker(worker_env, tmp_path):
    """Start `celery -A workers worker` processes (each in its own process group, so a test can
    SIGKILL a whole worker); all are stopped at the end of the test."""
    procs: list[subprocess.Popen] = []

    def start(queues: str = "cpu,gpu", name: str = "w1", **extra_env) -> subprocess.Popen:
        log_path = tmp_path / f"worker-{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, "--concurrency", "1",
             "--loglevel", "INFO", "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env={**worker_env, **extra_env}, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = log_path
        procs.append(proc)
        wait_for(lambda: b"ready." in log_path.read_bytes() or proc.poll() is not None, 60, what="worker start")
        if proc.poll() is not None:
            raise AssertionError("worker died at start:\n" + log_path.read_text())
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
