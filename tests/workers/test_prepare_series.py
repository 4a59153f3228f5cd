"""Uploading a series hands it to a real worker, which measures it and renders its thumbnail."""
from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import series_bytes
from tests.workers.conftest import wait_for
from webapp.archive.models import Series

pytestmark = [pytest.mark.worker]


def test_a_finished_upload_is_prepared_by_a_real_worker(client, cast, start_worker, archive_dir):
    from django.core.files.uploadedfile import SimpleUploadedFile

    start_worker()
    client.force_login(cast.admin)
    batch = client.post(reverse("archive:upload_batch_create")).json()["batch"]
    slices = [SimpleUploadedFile(f"{i}.dcm", d) for i, d in enumerate(series_bytes(6, slice_spacing_mm=1.25))]
    client.post(reverse("archive:upload_batch_files", args=[batch]), {"files": slices})

    client.post(reverse("archive:upload_batch_finish", args=[batch]))

    series = wait_for(
        lambda: Series.objects.filter(prepared_at__isnull=False).first(), timeout=90, what="series preparation"
    )
    assert series.slice_spacing_mm == pytest.approx(1.25)
    assert (archive_dir / series.thumbnail).read_bytes().startswith(b"\x89PNG")
    page = client.get(reverse("archive:study_detail", args=[series.study.study_uid])).content.decode()
    assert "1.250 mm" in page  # the measured slice spacing is shown
