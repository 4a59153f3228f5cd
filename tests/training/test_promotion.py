"""The promotion rule, promote / roll back (audited), and the registry page."""
from __future__ import annotations

import shutil

import pytest

from webapp.accounts.models import AuditEvent
from webapp.modelops import services as modelops
from webapp.modelops.models import ModelVersion
from webapp.training.models import TrainingRun
from webapp.training.promotion import decide

RULE = {"primary": "cpm", "min_gain": 0.0, "max_cpm_drop": 0.01, "require_dice_not_worse": True}


def metrics(heldout_cpm, phantom_cpm, dice=0.8, lesions=3):
    return {"heldout": {"cpm": heldout_cpm, "dice_ge_6mm": dice, "n_lesions": lesions},
            "phantom": {"cpm": phantom_cpm, "dice_ge_6mm": dice, "n_lesions": 5}}


@pytest.mark.parametrize("challenger, promoted, why", [
    (metrics(0.70, 0.80), True, "cpm on the heldout set 0.600 -> 0.700"),
    (metrics(0.60, 0.80), False, "not above"),                      # no gain
    (metrics(0.55, 0.80), False, "not above"),                      # worse
    (metrics(0.70, 0.78), False, "phantom-benchmark CPM fell"),     # forgets the phantoms
    (metrics(0.70, 0.795), True, "may fall by 0.01"),                  # a drop inside the allowance
    (metrics(0.70, 0.80, dice=0.7), False, "Dice >= 6 mm on the heldout set fell"),
    (metrics(float("nan"), 0.80), False, "missing"),
])
def test_the_rule(challenger, promoted, why):
    ok, reason = decide(metrics(0.60, 0.80), challenger, RULE)
    assert ok is promoted and why in reason


def test_without_held_out_lesions_the_phantom_benchmark_decides():
    champion = {"heldout": None, "phantom": {"cpm": 0.5, "dice_ge_6mm": 0.8}}
    ok, reason = decide(champion, {"heldout": None, "phantom": {"cpm": 0.6, "dice_ge_6mm": 0.8}}, RULE)
    assert ok and "cpm on the phantom set 0.500 -> 0.600" in reason
    ok, _ = decide(champion, {"heldout": None, "phantom": {"cpm": 0.6, "dice_ge_6mm": 0.8}}, {**RULE, "min_gain": 0.2})
    assert not ok


def test_too_few_held_out_lesions_leave_the_decision_to_the_phantom_benchmark():
    rule = {**RULE, "min_heldout_lesions": 10}
    # what the active-learning benchmark saw: better on the phantoms, a coin toss on 2 held-out lesions
    champion = {"heldout": {"cpm": 0.5, "dice_ge_6mm": 0.94, "n_lesions": 2}, "phantom": {"cpm": 0.32, "dice_ge_6mm": 0.80}}
    challenger = {"heldout": {"cpm": 0.5, "dice_ge_6mm": 0.70, "n_lesions": 2}, "phantom": {"cpm": 0.50, "dice_ge_6mm": 0.82}}

    refused, _ = decide(champion, challenger, RULE)
    ok, reason = decide(champion, challenger, rule)
    still_judged_on_held_out, _ = decide(metrics(0.5, 0.32, lesions=12), metrics(0.5, 0.5, lesions=12), rule)

    assert not refused and ok
    assert "hold 2 lesion(s), fewer than 10: judged on the phantom benchmark" in reason
    assert "cpm on the phantom set 0.320 -> 0.500" in reason
    assert not still_judged_on_held_out


@pytest.fixture
def versions(db, tmp_path):
    """v1 champion (the shipped file), v2 a challenger (a copy of it)."""
    v1 = modelops.get_champion()
    copy = tmp_path / "v2.pt"
    shutil.copy(v1.path, copy)
    v2 = modelops.register_model_file(copy, name="finetuned", parent=v1)
    return v1, v2


def test_promote_then_roll_back_restores_the_previous_champion(versions, cast):
    v1, v2 = versions
    assert v2.version == 2 and v2.status == "challenger" and v2.metadata["format"] == "radloop-ml/1"

    modelops.promote(v2, actor=cast.admin, reason="better")
    assert modelops.get_champion() == v2
    v1.refresh_from_db(), v2.refresh_from_db()
    assert v1.status == "retired" and v2.previous_champion == v1

    back = modelops.roll_back(actor=cast.admin)

    assert back == v1 and modelops.get_champion().version == 1
    v2.refresh_from_db()
    assert v2.status == "retired"
    assert sorted(AuditEvent.objects.filter(action__startswith="modelops.model.").values_list("action", "object_id")) == [
        ("modelops.model.promoted", "2"), ("modelops.model.rolled_back", "1")]
    with pytest.raises(modelops.RegistryError, match="no previous champion"):
        modelops.roll_back(actor=cast.admin)


def test_the_registry_page_lists_versions_metrics_runs_and_plots(versions, admin_client):
    v1, v2 = versions
    TrainingRun.objects.create(trigger="manual", state="done", parent=v1, challenger=v2, decision="rejected",
                               decision_reason="cpm on the heldout set 0.600 -> 0.550: gain -0.050 not above 0",
                               champion_metrics=metrics(0.6, 0.8) | {"phantom": {"cpm": 0.8, "froc": {
                                   "fp_per_scan": [0.125, 1, 8], "sensitivity": [0.2, 0.6, 0.9]}}},
                               challenger_metrics=metrics(0.55, 0.79))

    page = admin_client.get("/models/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-version="2" data-status="challenger"' in html and 'data-version="1" data-status="champion"' in html
    assert "0.550" in html and "gain -0.050 not above 0" in html
    assert html.count("<svg") == 2 and "FROC on the phantom benchmark" in html
    assert "Roll back" not in html  # v1 replaced nobody
    runs = admin_client.get("/models/runs.json").json()["runs"]
    assert runs[0]["challenger"] == 2 and runs[0]["decision"] == "rejected"


def test_admins_promote_and_roll_back_from_the_page(versions, admin_client):
    response = admin_client.post("/models/2/promote")
    assert response.status_code == 302 and modelops.get_champion().version == 2
    assert "Roll back to v1" in admin_client.get("/models/").content.decode()

    admin_client.post("/models/rollback")

    assert modelops.get_champion().version == 1
    assert AuditEvent.objects.filter(action="modelops.model.rolled_back", actor_username="alice-admin").exists()


def test_retrain_now_queues_a_run_or_says_why_not(versions, admin_client, cases, settings):
    settings.RETRAIN_HELDOUT_SHARE = 0.0
    page = admin_client.post("/models/retrain", follow=True).content.decode()
    assert "Too few signed-off training cases" in page
    cases.signed_off()
    admin_client.post("/models/retrain")
    run = TrainingRun.objects.get()
    assert run.trigger == "manual" and run.requested_by.username == "alice-admin" and run.parent.version == 1


def test_the_rerun_button_queues_unreviewed_studies_with_the_champion(versions, admin_client, cases):
    cases.study("unreviewed")
    cases.signed_off("done")
    admin_client.post("/models/rerun-unreviewed")
    from webapp.modelops.models import InferenceRun

    assert [(r.series.study.accession_number, r.model_version.version) for r in InferenceRun.objects.all()] == [("A1", 1)]


@pytest.mark.parametrize("method, path", [("get", "/models/"), ("get", "/models/runs.json"), ("post", "/models/retrain"),
                                          ("post", "/models/2/promote"), ("post", "/models/rollback")])
def test_radiologists_cannot_reach_the_registry(versions, radiologist_client, method, path):
    assert getattr(radiologist_client, method)(path).status_code == 403
    assert ModelVersion.objects.get(status="champion").version == 1
