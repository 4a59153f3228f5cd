"""The one place the web app enqueues background work: by task name, after the commit.

``webapp`` never imports ``workers``; tasks are addressed by their registered names, and routing
to queues (cpu / gpu) lives in the Celery configuration.
"""
from __future__ import annotations

import logging

from django.db import transaction

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
