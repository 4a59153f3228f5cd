"""The case browser and study page as a radiologist sees them."""
from __future__ import annotations

import io

import pytest
from django.urls import reverse

from tests.factories import series_bytes, to_bytes, ct_slice
from webapp.accounts.models import AuditEvent
from webapp.archive import services
from webapp.archive.models import Series, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def archive(cast):
    batch = services.start_batch(cast.admin)
    specs = [
        dict(study="s-ann", series="se-ann", patient_id="P-ANN", patient_name="Smith^Ann", study_date="20250105", accession="A100"),
        dict(study="s-bob", series="se-bob", patient_id="P-BOB", patient_name="Jones^Bob", study_date="20250210", accession="A200"),
        dict(study="s-cid", series="se-cid", patient_id="P-CID", patient_name="Brown^Cid", study_date="20250320", accession="A300", modality="MR"),
    ]
    for spec in specs:
        for data in series_bytes(2, **spec):
            services.ingest_stream(batch, "x.dcm", io.BytesIO(data))
    return {s.patient_id: s for s in Study.objects.all()}


def listed(response) -> list[str]:
    return [study.patient_id for study in response.context["page"]]


def test_a_radiologist_sees_every_study_with_counts(radiologist_client, archive):
    response = radiologist_client.get(reverse("archive:study_list"))

    assert response.status_code == 200
    assert listed(response) == ["P-CID", "P-BOB", "P-ANN"]  # newest study first
    html = response.content.decode()
    assert "Smith, Ann" in html and "A100" in html
    row = next(s for s in response.context["page"] if s.patient_id == "P-ANN")
    assert (row.num_series, row.num_instances) == (1, 2)


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"q": "jones"}, ["P-BOB"]),
        ({"q": "P-ANN"}, ["P-ANN"]),
        ({"q": "A300"}, ["P-CID"]),
        ({"date_from": "2025-02-01", "date_to": "2025-02-28"}, ["P-BOB"]),
        ({"modality": "mr"}, ["P-CID"]),
        ({"sort": "patient_name"}, ["P-CID", "P-BOB", "P-ANN"]),
        ({"sort": "study_date"}, ["P-ANN", "P-BOB", "P-CID"]),
        ({"review_status": "signed_off"}, []),
    ],
)
def test_search_filter_and_sort(radiologist_client, archive, query, expected):
    response = radiologist_client.get(reverse("archive:study_list"), query)

    assert listed(response) == expected


def test_an_inverted_date_range_is_explained_not_crashed(radiologist_client, archive):
    response = radiologist_client.get(reverse("archive:study_list"), {"date_from": "2025-03-01", "date_to": "2025-01-01"})

    assert response.status_code == 200
    assert "The start date is after the end date." in response.content.decode()


def test_the_list_paginates(radiologist_client, cast):
    batch = services.start_batch(cast.admin)
    for i in range(30):
        services.ingest_stream(batch, "x", io.BytesIO(to_bytes(ct_slice(study=f"st{i}", series=f"se{i}", patient_id=f"P{i:02d}"))))

    first = radiologist_client.get(reverse("archive:study_list"))
    second = radiologist_client.get(reverse("archive:study_list"), {"page": 2})

    assert len(listed(first)) == 25 and len(listed(second)) == 5
    assert "Page 1 of 2" in first.content.decode()


def test_the_study_page_shows_series_acquisition_and_is_audited(radiologist_client, cast, archive):
    study = archive["P-ANN"]

    response = radiologist_client.get(reverse("archive:study_detail", args=[study.study_uid]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "0.700 × 0.700 mm" in html and "2.500 mm" in html and "16 × 16" in html
    event = AuditEvent.objects.get(action="archive.study.viewed")
    assert event.actor == cast.radiologist and event.object_id == study.study_uid


def test_thumbnails_are_rendered_and_cached(radiologist_client, archive):
    series = Series.objects.get(study=archive["P-ANN"])
    url = reverse("archive:series_thumbnail", args=[series.series_uid])

    response = radiologist_client.get(url)
    cached = radiologist_client.get(url, HTTP_IF_NONE_MATCH=response["ETag"])

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")
    assert cached.status_code == 304


def test_unknown_study_is_404_and_outsiders_get_403(client, cast, archive):
    client.force_login(cast.radiologist)
    assert client.get(reverse("archive:study_detail", args=["1.2.3.4"])).status_code == 404
    client.force_login(cast.outsider)
    assert client.get(reverse("archive:study_list")).status_code == 403
    assert client.get(reverse("archive:study_detail", args=[archive["P-ANN"].study_uid])).status_code == 403
    series = Series.objects.first()
    assert client.get(reverse("archive:series_thumbnail", args=[series.series_uid])).status_code == 403
