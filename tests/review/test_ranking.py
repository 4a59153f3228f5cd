"""The active-learning order as a radiologist meets it: the worklist's default order, its Priority
column (rank and why), and the case "Next case" opens. Runs and findings are made by hand."""
from __future__ import annotations

import re

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from webapp.archive.models import AIStatus, ReviewStatus, Study
from webapp.modelops.models import InferenceRun, ModelVersion
from webapp.review.models import CaseReview, Finding
from webapp.review.ranking import DIVERSITY_WEIGHT, Candidate, current_ranking, rank_cases

from .conftest import API, ai_finding, ingest

pytestmark = pytest.mark.django_db

GROUND_GLASS = dict(diameter_mm=8.0, mean_hu=-600.0, score=0.35)
SOLID_LARGE = dict(diameter_mm=18.0, mean_hu=40.0, score=0.8)


def case_read(cast, model, name, *, case_uncertainty, findings=(), date="20250101", run_state=InferenceRun.State.DONE):
    """A CT study read by ``model``: one run with ``case_uncertainty`` and the given AI findings
    (dicts of diameter_mm, mean_hu, score, optional uncertainty)."""
    study = ingest(cast, indices=range(2), study=f"st-{name}", series=f"se-{name}", patient_id=name, study_date=date)
    Study.objects.filter(pk=study.pk).update(ai_status=AIStatus.AI_READY)
    run = InferenceRun.objects.create(series=study.series.get(), model_version=model, state=run_state,
                                      case_uncertainty=case_uncertainty, finished_at=timezone.now(),
                                      findings_count=len(findings))
    for spec in findings:
        f = ai_finding(study, model, diameter_mm=spec["diameter_mm"], uncertainty=spec.get("uncertainty", case_uncertainty))
        Finding.objects.filter(pk=f.pk).update(mean_hu=spec["mean_hu"], score=spec["score"], inference_run=run)
    return Study.objects.get(pk=study.pk)


def sign_off(study):
    CaseReview.objects.update_or_create(study=study, defaults={"signed_off_at": timezone.now()})
    Study.objects.filter(pk=study.pk).update(review_status=ReviewStatus.SIGNED_OFF)


def worklist_rows(client, **query) -> list[tuple[str, str, str]]:
    """(patient ID, rank text, why text) per row, as the page shows them."""
    html = client.get(reverse("archive:study_list"), query).content.decode()
    rows = []
    for row in re.findall(r'<tr class="study-row".*?</tr>', html, re.S):
        cell = re.search(r'<td class="num priority">(.*?)</td>', row, re.S).group(1)
        rank = re.search(r'<span class="rank">(.*?)</span>', cell)
        why = re.search(r'<span class="muted small why">(.*?)</span>', cell)
        patient = re.findall(r"<td><bdi>([^<]*)</bdi></td>", row)[0]  # the Patient ID cell
        rows.append((patient, rank.group(1) if rank else "", why.group(1) if why else ""))
    return rows


def next_uid(client):
    response = client.get(f"{API}/next/")
    return response.json()["study_uid"] if response.status_code == 200 else None


def test_the_most_uncertain_case_comes_first_and_the_page_says_why(radiologist_client, cast, model):
    low = case_read(cast, model, "P-LOW", case_uncertainty=0.2, findings=[SOLID_LARGE], date="20250301")
    high = case_read(cast, model, "P-HIGH", case_uncertainty=0.8, findings=[GROUND_GLASS], date="20250101")
    negative = case_read(cast, model, "P-NEG", case_uncertainty=0.0, date="20250401")
    waiting = case_read(cast, model, "P-WAIT", case_uncertainty=None, date="20250501",
                        run_state=InferenceRun.State.QUEUED)
    Study.objects.filter(pk=waiting.pk).update(ai_status=AIStatus.PROCESSING)

    rows = worklist_rows(radiologist_client)

    assert [r[0] for r in rows] == ["P-HIGH", "P-LOW", "P-NEG", "P-WAIT"]  # unranked (not read yet) last
    assert rows[0][1:] == ("#1", "AI uncertainty 0.80")
    assert rows[1][1:] == ("#2", "AI uncertainty 0.20")
    assert rows[2][1] == "#3" and rows[2][2].startswith("AI uncertainty 0.00")
    assert rows[3][1:] == ("", "")
    client = radiologist_client
    assert next_uid(client) == high.study_uid
    assert client.get("/next/")["Location"] == f"/studies/{high.study_uid}/view/"
    CaseReview.objects.create(study=high, assignee=cast.radiologist2)
    assert next_uid(client) == low.study_uid  # #1 is someone else's: the next in the order
    sign_off(low)
    assert next_uid(client) == negative.study_uid


def test_a_near_copy_of_a_case_already_ranked_is_moved_down_and_the_page_names_the_twin(radiologist_client, cast, model):
    case_read(cast, model, "P-GGO-A", case_uncertainty=0.80, findings=[GROUND_GLASS])
    twin = case_read(cast, model, "P-GGO-B", case_uncertainty=0.75, findings=[GROUND_GLASS])
    other = case_read(cast, model, "P-SOLID", case_uncertainty=0.50, findings=[SOLID_LARGE])

    rows = worklist_rows(radiologist_client)

    # By uncertainty alone the twin would be #2; it teaches little after P-GGO-A, so P-SOLID goes first.
    assert [r[0] for r in rows] == ["P-GGO-A", "P-SOLID", "P-GGO-B"]
    assert rows[1][2] == "AI uncertainty 0.50"  # nothing like it ranked before: no penalty text
    assert rows[2][1:] == ("#3", f"AI uncertainty 0.75; −{DIVERSITY_WEIGHT:.0%} similar to P-GGO-A (ranked #1)")
    ranking = current_ranking()
    assert ranking[twin.pk].priority == pytest.approx(0.75 * (1 - DIVERSITY_WEIGHT))
    assert ranking[other.pk].priority == pytest.approx(0.50, abs=1e-3)


def test_a_kind_of_case_just_reviewed_is_asked_for_later(radiologist_client, cast, model):
    reviewed = case_read(cast, model, "P-DONE", case_uncertainty=0.9, findings=[GROUND_GLASS])
    sign_off(reviewed)
    case_read(cast, model, "P-GGO", case_uncertainty=0.8, findings=[GROUND_GLASS])
    solid = case_read(cast, model, "P-SOLID", case_uncertainty=0.5, findings=[SOLID_LARGE])

    rows = worklist_rows(radiologist_client)

    assert [r[0] for r in rows[:2]] == ["P-SOLID", "P-GGO"]
    assert rows[1][2] == f"AI uncertainty 0.80; −{DIVERSITY_WEIGHT:.0%} similar to P-DONE (already reviewed)"
    assert ("P-DONE", "", "") in rows  # signed off: listed, not ranked
    assert next_uid(radiologist_client) == solid.study_uid


def test_the_champions_run_speaks_for_a_case_not_an_older_models(radiologist_client, cast, model):
    old = ModelVersion.objects.create(version=2, name="old", file_path="ml/weights/old.pt", sha256="1" * 64,
                                      status=ModelVersion.Status.RETIRED)
    a = case_read(cast, old, "P-A", case_uncertainty=0.9, findings=[GROUND_GLASS])
    InferenceRun.objects.create(series=a.series.get(), model_version=model, state=InferenceRun.State.DONE,
                                case_uncertainty=0.1, finished_at=timezone.now())
    b = case_read(cast, model, "P-B", case_uncertainty=0.4, findings=[SOLID_LARGE])
    c = case_read(cast, old, "P-C", case_uncertainty=0.6, findings=[SOLID_LARGE])  # champion has not read it yet

    rows = worklist_rows(radiologist_client)

    assert [r[:2] for r in rows] == [("P-C", "#1"), ("P-B", "#2"), ("P-A", "#3")]
    assert rows[2][2].startswith("AI uncertainty 0.10")
    assert next_uid(radiologist_client) == c.study_uid
    assert b.pk in current_ranking()


def test_the_other_orders_and_filters_still_work_beside_the_priority(radiologist_client, cast, model):
    case_read(cast, model, "P-OLD", case_uncertainty=0.9, findings=[GROUND_GLASS], date="20240101")
    case_read(cast, model, "P-NEW", case_uncertainty=0.1, findings=[SOLID_LARGE], date="20250101")

    assert [r[0] for r in worklist_rows(radiologist_client, sort="-study_date")] == ["P-NEW", "P-OLD"]
    assert [r[0] for r in worklist_rows(radiologist_client, sort="-priority_rank")] == ["P-NEW", "P-OLD"]
    rows = worklist_rows(radiologist_client, q="P-NEW")
    assert rows == [("P-NEW", "#2", "AI uncertainty 0.10")]  # the rank is the case's place in the whole order
    html = radiologist_client.get(reverse("archive:study_list")).content.decode()
    options = re.findall(r'<option value="([^"]*)"', html.split('name="sort"')[1].split("</select>")[0])
    assert options[0] == "priority_rank"  # the sort menu starts with the default order


def test_without_diversity_the_order_is_by_uncertainty_with_ties_in_the_given_order():
    far = list(np.eye(4))  # pairwise equally far apart
    cases = [Candidate(i, f"c{i}", u, far[i]) for i, u in enumerate([0.3, 0.7, 0.3, None])]

    ranked = rank_cases(cases)

    assert [p.study_id for p in ranked] == [1, 0, 2, 3]
    assert [p.rank for p in ranked] == [1, 2, 3, 4]
    assert all(p.penalty < 1e-6 for p in ranked)
    assert ranked[3].why == "no uncertainty measured"
