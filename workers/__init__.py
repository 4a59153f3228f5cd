"""Celery worker package: ``celery -A workers worker -Q cpu,gpu``.

Tasks are thin adapters over service functions; see ``workers.tasks``.
"""
import django

from webapp.celery_app import app

django.setup()

from . import tasks  # noqa: E402,F401  (registers the tasks)

__all__ = ["app"]
