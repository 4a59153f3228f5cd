"""The one place the web app enqueues background work: by task name, after the commit.

``webapp`` never imports ``workers``; tasks are addressed by their registered names, and routing
to queues (cpu / gpu) lives in the Celery configuration.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from webapp.celery_app import app

log = logging.getLogger(__name__)


def enqueue(task_name: str, *args, countdown: float | None = None, **kwargs) -> str:
    """Send now (to run no earlier than ``countdown`` seconds from now, if given). Returns the task id."""
    result = app.send_task(task_name, args=args, kwargs=kwargs, countdown=countdown)
    log.info("queued %s%r%s as %s", task_name, args, f" in {countdown:.0f} s" if countdown else "", result.id)
    return result.id


def enqueue_on_commit(task_name: str, *args, **kwargs) -> None:
    """Send once the current transaction commits (a rolled-back change queues nothing)."""
    transaction.on_commit(lambda: enqueue(task_name, *args, **kwargs))


def enqueue_later_on_commit(task_name: str, countdown: float, *args) -> None:
    """Send once the current transaction commits, to run no earlier than ``countdown`` seconds later."""
    transaction.on_commit(lambda: enqueue(task_name, *args, countdown=countdown))


def notify_on_commit(task_name: str, *args, **kwargs) -> None:
    """Like :func:`enqueue_on_commit` for work that may be missed (a periodic job catches up): a
    broker that is down is logged, and the change that was committed still answers normally."""
    transaction.on_commit(lambda: enqueue(task_name, *args, **kwargs), robust=True)


BROKER_MARK = "radloop:broker-mark"  # a key of ours in the broker: gone means the broker lost its data


def broker_lost_messages_before() -> datetime | None:
    """When a Redis broker restarted empty (no persistence; its mark key is gone), the time it started:
    every message sent before then is lost, and the rows that wait for one must be queued again. None
    when the broker kept its data, or is not Redis (the filesystem broker keeps its files)."""
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        if not client.set(BROKER_MARK, timezone.now().isoformat(), nx=True):
            return None  # the mark we left is still there: nothing was lost
        uptime_seconds = client.info("server")["uptime_in_seconds"]
    except redis.RedisError:
        log.warning("could not ask the broker whether it lost its messages", exc_info=True)
        return None
    finally:
        client.close()
    # Redis keeps its start and clock in whole seconds: take the latest time it may have started (up to
    # 2 s late) rather than miss a run queued just before. A run queued in those seconds may be sent
    # twice; a message for a run already done is skipped (services.claim).
    started = timezone.now() - timedelta(seconds=uptime_seconds - 1)
    log.warning("the broker holds no mark of ours (first use, or it restarted empty): messages sent before %s "
                "are gone", started.isoformat())
    return started
