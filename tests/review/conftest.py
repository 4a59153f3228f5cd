"""A small CT study (16 x 16 pixels of 0.7 mm, slices 2.5 mm apart) with AI findings.

HU of the factory slices: -1000 outside, ``40 + slice index`` in the block rows 4..11, columns 4..11.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.factories import ct_slice, to_bytes, uid
from webapp.archive import services as archive
from webapp.archive.models import AIStatus, Series, Study
from webapp.modelops.models import ModelVersion
from webapp.review.models import Finding

API = "/api/review"


def ingest(cast, indices=range(6), **spec) -> Study:
    batch = archive.start_batch(cast.admin)
    for i in indices:
        archive.ingest_stream(batch, f"{i}.dcm", io.BytesIO(to_bytes(ct_slice(index=i, **spec))))
    series = Series.objects.get(series_uid=uid(spec.get("series", "series-1")))
    archive.prepare_series(series.pk)
    return series.study


@pytest.fixture
def model(db) -> ModelVersion:
    return ModelVersion.objects.create(version=3, name="baseline", file_path="ml/weights/x.pt", sha256="0" * 64,
                                       status=ModelVersion.Status.CHAMPION)


def ai_finding(study: Study, model: ModelVersion, *, diameter_mm=6.0, uncertainty=0.2, centre=(-96.5, -96.5, -45.0),
               score=0.9, flagged=True) -> Finding:
    series = study.series.get()
    f = Finding(study=study, series=series, source=Finding.Source.AI, model_version=model,
                centre_x_mm=centre[0], centre_y_mm=centre[1], centre_z_mm=centre[2],
                bbox_min_xyz_mm=[c - diameter_mm / 2 for c in centre], bbox_max_xyz_mm=[c + diameter_mm / 2 for c in centre],
                diameter_mm=diameter_mm, long_axis_mm=diameter_mm, short_axis_mm=diameter_mm * 0.8, volume_ml=0.05,
                mean_hu=41.0, score=score, flagged=flagged, uncertainty=uncertainty)
    f.set_mask(np.ones((2, 2, 2), bool), (1, 5, 5))
    f.save()
    return f


@pytest.fixture
def study(cast, model) -> Study:
    study = ingest(cast)
    Study.objects.filter(pk=study.pk).update(ai_status=AIStatus.AI_READY)
    study.refresh_from_db()
    return study


@pytest.fixture
def findings(study, model) -> list[Finding]:
    return [ai_finding(study, model, diameter_mm=6.0), ai_finding(study, model, diameter_mm=4.0, centre=(-94.0, -94.0, -42.5))]


def act(client, study, **body):
    return client.post(f"{API}/studies/{study.study_uid}/actions/", json.dumps(body), content_type="application/json")


def case(client, study) -> dict:
    response = client.get(f"{API}/studies/{study.study_uid}/")
    assert response.status_code == 200, response.content
    return response.json()
