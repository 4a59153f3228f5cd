"""The Celery application, configured from Django settings (CELERY_* names).

Defined here so the web app can send tasks by name without importing ``workers``; the worker
process loads it through ``workers`` (``celery -A workers worker``), which registers the tasks.
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("radloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
