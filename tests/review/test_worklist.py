"""The case browser as a worklist: review columns, filters, sorting, and the next case."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from webapp.archive.models import AIStatus, ReviewStatus, Study
from webapp.review.models import CaseReview

from .conftest import API, ai_finding, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def worklist(cast, model):
    """Four CT studies: ann (AI ready, 9 mm finding, uncertainty 0.1), bob (AI ready, 5 mm, 0.7),
    cid (AI ready, negative), dan (AI still processing); plus eve, signed off."""
    studies = {}
    for name, date in [("ann", "20250105"), ("bob", "20250210"), ("cid", "20250320"), ("dan", "20250401"), ("eve", "20250415")]:
        s = ingest(cast, indices=range(3), study=f"st-{name}", series=f"se-{name}", patient_id=f"P-{name.upper()}",
                   patient_name=f"{name.capitalize()}^Test", study_date=date)
        Study.objects.filter(pk=s.pk).update(ai_status=AIStatus.AI_READY)
        studies[name] = s
    ai_finding(studies["ann"], model, diameter_mm=9.0, uncertainty=0.1)
    ai_finding(studies["ann"], model, diameter_mm=4.0, uncertainty=0.05)
    ai_finding(studies["bob"], model, diameter_mm=5.0, uncertainty=0.7)
    ai_finding(studies["eve"], model, diameter_mm=12.0, uncertainty=0.9)
    Study.objects.filter(pk=studies["dan"].pk).update(ai_status=AIStatus.PROCESSING)
    Study.objects.filter(pk=studies["eve"].pk).update(review_status=ReviewStatus.SIGNED_OFF)
    return {k: Study.objects.get(pk=v.pk) for k, v in studies.items()}


def listed(response) -> list[str]:
    return [s.patient_id for s in response.context["page"]]


def assign(study, user):
    CaseReview.objects.update_or_create(study=study, defaults={"assignee": user})


def row_html(html: str, patient_id: str) -> str:
    # DICOM text is shown in its own bidi isolate: <td><bdi>ID</bdi></td>
    return next(r for r in re.findall(r'<tr class="study-row".*?</tr>', html, re.S) if f"<td><bdi>{patient_id}</bdi></td>" in r)


def test_each_row_shows_the_review_columns_and_opens_the_viewer(radiologist_client, cast, worklist):
    assign(worklist["ann"], cast.radiologist2)

    response = radiologist_client.get(reverse("archive:study_list"))

    html = response.content.decode()
    for header in ("Patient", "Study date", "Modality", "AI", "Findings", "Largest", "Uncertainty", "Review", "Assignee"):
        assert f">{header}</a>" in html
    ann = row_html(html, "P-ANN")
    assert f'href="/studies/{worklist["ann"].study_uid}/view/"' in ann and "Ann, Test" in ann
    assert "2025-01-05" in ann and "<td><bdi>CT</bdi></td>" in ann and "AI ready" in ann
    assert '<td class="num ai-findings">2</td>' in ann and "9.0 mm" in ann
    assert '<td class="num uncertainty">0.10</td>' in ann
    assert '<td class="assignee"><bdi>ravi-radiologist</bdi></td>' in ann and "Unreviewed" in ann
    assert '<td class="assignee"><bdi>—</bdi></td>' in row_html(html, "P-BOB")
    assert "Signed off" in row_html(html, "P-EVE")
    assert 'id="next-case" href="/next/"' in html


def test_the_page_costs_the_same_queries_for_more_rows(radiologist_client, cast, model, worklist):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    radiologist_client.get(reverse("archive:study_list"))  # the session's first-request writes are done
    with CaptureQueriesContext(connection) as five_rows:
        radiologist_client.get(reverse("archive:study_list"))
    for i in range(4):
        s = ingest(cast, indices=range(2), study=f"more-{i}", series=f"more-se-{i}", patient_id=f"M{i}")
        ai_finding(s, model)
        assign(s, cast.radiologist)
    with CaptureQueriesContext(connection) as nine_rows:
        assert len(listed(radiologist_client.get(reverse("archive:study_list")))) == 9
    # a fixed number of queries per page (the read's audit entry included), whatever its length
    assert len(nine_rows) == len(five_rows) <= 20


@pytest.mark.parametrize("query, expected", [
    ({"assigned": "mine"}, ["P-BOB"]),
    ({"assigned": "unassigned", "sort": "-study_date"}, ["P-EVE", "P-DAN", "P-CID"]),
    ({"assigned": "unassigned"}, ["P-CID", "P-EVE", "P-DAN"]),  # default: AI priority, then unranked newest first
    ({"review_status": "signed_off"}, ["P-EVE"]),
    ({"ai_result": "positive", "sort": "-study_date"}, ["P-EVE", "P-BOB", "P-ANN"]),
    ({"ai_result": "positive"}, ["P-BOB", "P-ANN", "P-EVE"]),
    ({"ai_result": "negative"}, ["P-CID"]),
    ({"date_from": "2025-02-01", "date_to": "2025-03-31", "sort": "-study_date"}, ["P-CID", "P-BOB"]),
    ({"sort": "-max_uncertainty"}, ["P-EVE", "P-BOB", "P-ANN", "P-DAN", "P-CID"]),
    ({"sort": "max_uncertainty"}, ["P-ANN", "P-BOB", "P-EVE", "P-DAN", "P-CID"]),
    ({"sort": "-largest_mm"}, ["P-EVE", "P-ANN", "P-BOB", "P-DAN", "P-CID"]),
    ({"sort": "-ai_findings"}, ["P-ANN", "P-EVE", "P-BOB", "P-DAN", "P-CID"]),
    ({"sort": "assignee_name"}, ["P-ANN", "P-BOB", "P-EVE", "P-DAN", "P-CID"]),  # ravi, rita, then none
    ({"sort": "review_status"}, ["P-EVE", "P-DAN", "P-CID", "P-BOB", "P-ANN"]),
    ({"sort": "patient_name"}, ["P-ANN", "P-BOB", "P-CID", "P-DAN", "P-EVE"]),
    ({"sort": "ai_status", "assigned": "unassigned"}, ["P-EVE", "P-CID", "P-DAN"]),
])
def test_filters_and_sorts(radiologist_client, cast, worklist, query, expected):
    assign(worklist["bob"], cast.radiologist)
    assign(worklist["ann"], cast.radiologist2)

    response = radiologist_client.get(reverse("archive:study_list"), query)

    assert response.status_code == 200 and listed(response) == expected


def test_candidates_below_the_operating_point_are_not_counted_as_findings(radiologist_client, worklist, model):
    ai_finding(worklist["cid"], model, diameter_mm=20.0, score=0.02, flagged=False)      # a vessel, say
    ai_finding(worklist["ann"], model, diameter_mm=25.0, score=0.03, flagged=False)

    response = radiologist_client.get(reverse("archive:study_list"))
    negative = radiologist_client.get(reverse("archive:study_list"), {"ai_result": "negative"})

    html = response.content.decode()
    assert '<td class="num ai-findings">2</td>' in row_html(html, "P-ANN") and "9.0 mm" in row_html(html, "P-ANN")
    assert '<td class="num ai-findings">0</td>' in row_html(html, "P-CID") and "20.0 mm" not in html
    assert listed(negative) == ["P-CID"]


def test_sorting_by_anything_else_is_refused_politely(radiologist_client, worklist):
    response = radiologist_client.get(reverse("archive:study_list"), {"sort": "patient_birth_date"})

    assert response.status_code == 200
    assert "Cannot sort by &#x27;patient_birth_date&#x27;." in response.content.decode()
    assert listed(response)[0] == "P-BOB"  # default order: the active-learning priority (bob is the most uncertain)


def test_a_column_header_sorts_and_then_reverses(radiologist_client, worklist):
    html = radiologist_client.get(reverse("archive:study_list"), {"sort": "largest_mm", "assigned": "unassigned"}).content.decode()

    assert 'href="?sort=-largest_mm&amp;assigned=unassigned">Largest</a> ▲' in html
    assert 'href="?sort=max_uncertainty&amp;assigned=unassigned">Uncertainty</a> </th>' in html
    assert '<option value="largest_mm" selected>By largest mm (ascending)</option>' in html  # kept on "Apply"


def test_next_case_order(client, cast, worklist):
    """AI ready first; assigned to me before unassigned; then the active-learning priority (most
    uncertain); never signed off or someone else's case."""
    client.force_login(cast.radiologist)

    def next_uid():
        response = client.get(f"{API}/next/")
        return response.json()["study_uid"] if response.status_code == 200 else None

    assert next_uid() == worklist["bob"].study_uid  # most uncertain among unassigned, AI-ready cases
    assign(worklist["bob"], cast.radiologist2)
    assert next_uid() == worklist["ann"].study_uid  # then ann (0.1) before cid (negative, nothing uncertain)
    assign(worklist["bob"], None)
    assign(worklist["cid"], cast.radiologist)
    assert next_uid() == worklist["cid"].study_uid  # mine first
    assign(worklist["cid"], None)
    assign(worklist["ann"], cast.radiologist2)
    assert next_uid() == worklist["bob"].study_uid  # ann is ravi's now (bob was first anyway)
    Study.objects.filter(pk__in=[worklist["bob"].pk, worklist["cid"].pk]).update(review_status=ReviewStatus.SIGNED_OFF)
    assert next_uid() == worklist["dan"].study_uid  # AI not ready, but still to read
    Study.objects.filter(pk=worklist["dan"].pk).update(review_status=ReviewStatus.SIGNED_OFF)
    response = client.get(f"{API}/next/")
    assert response.status_code == 404 and response.json() == {"error": "No unreviewed cases"}


def test_next_case_ties_go_to_the_most_uncertain_then_the_oldest(client, cast, model):
    a = ingest(cast, indices=range(2), study="t-a", series="t-a-ct", patient_id="T-A")
    b = ingest(cast, indices=range(2), study="t-b", series="t-b-ct", patient_id="T-B")
    c = ingest(cast, indices=range(2), study="t-c", series="t-c-ct", patient_id="T-C")
    Study.objects.update(ai_status=AIStatus.AI_READY)
    ai_finding(a, model, diameter_mm=6.0, uncertainty=0.2)
    ai_finding(b, model, diameter_mm=6.0, uncertainty=0.6)
    client.force_login(cast.radiologist)

    assert client.get(f"{API}/next/").json() == {"study_uid": b.study_uid, "url": f"/studies/{b.study_uid}/view/"}
    Study.objects.filter(pk__in=[a.pk, b.pk]).update(review_status=ReviewStatus.SIGNED_OFF)
    d = ingest(cast, indices=range(2), study="t-d", series="t-d-ct", patient_id="T-D")
    Study.objects.filter(pk=d.pk).update(ai_status=AIStatus.AI_READY)
    assert client.get(f"{API}/next/").json()["study_uid"] == c.study_uid  # uploaded before d


def test_the_next_case_button_redirects_to_the_viewer_or_back_with_a_message(radiologist_client, worklist):
    response = radiologist_client.get("/next/")

    assert response.status_code == 302 and response["Location"] == f"/studies/{worklist['bob'].study_uid}/view/"
    Study.objects.update(review_status=ReviewStatus.SIGNED_OFF)
    response = radiologist_client.get("/next/", follow=True)
    assert response.redirect_chain == [("/studies/", 302)]
    assert "No unreviewed cases" in response.content.decode()


def test_the_next_case_button_is_for_readers_only(client, cast, worklist):
    client.force_login(cast.outsider)

    assert client.get("/next/").status_code == 403
