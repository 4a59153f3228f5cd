"""Celery tasks: each takes IDs, calls one service, returns JSON values."""
from __future__ import annotations

import logging

from webapp.archive import services as archive
from webapp.archive.models import Series
from webapp.celery_app import app

log = logging.getLogger(__name__)


@app.task(name="workers.prepare_series", soft_time_limit=300, time_limit=360)
def prepare_series(series_id: int) -> dict:
    """Series geometry and thumbnail. A series deleted meanwhile is not an error."""
    try:
        series = archive.prepare_series(series_id)
    except Series.DoesNotExist:
        log.warning("series %s no longer exists", series_id)
        return {"series_id": series_id, "skipped": "deleted"}
    return {"series_id": series.pk, "slice_spacing_mm": series.slice_spacing_mm, "thumbnail": series.thumbnail}
