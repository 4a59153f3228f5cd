"""PROMOTION_REQUIRES_APPROVAL: a winning challenger waits on /models/ for an admin's Approve or Reject;
a rejected version is promoted only with a written reason, which the audit log keeps."""
from __future__ import annotations

import shutil

import pytest

from webapp.accounts.models import AuditEvent
from webapp.modelops import services as modelops
from webapp.modelops.models import ModelVersion
from webapp.training import services
from webapp.training.models import TrainingRun

REASON = "cpm on the phantom set 0.500 -> 0.600 (gain +0.100 > 0)"
WRITTEN = "Second reader reviewed its FROC on our cases; accepting the lower Dice."


@pytest.fixture
def challenger(db, tmp_path):
    """v1 champion (the shipped file), v2 a challenger made by training run 1 (a copy of v1's file)."""
    v1 = modelops.get_champion()
    copy = tmp_path / "v2.pt"
    shutil.copy(v1.path, copy)
    v2 = modelops.register_model_file(copy, name="finetuned", parent=v1)
    run = TrainingRun.objects.create(trigger="manual", state="running", parent=v1, challenger=v2)
    return run, v1, v2


def finish(run, v2, *, won: bool):
    """The run's last step, as the training worker ends it: both models measured, the rule decided."""
    metrics = {"champion": {"heldout": None, "phantom": {"cpm": 0.5}}, "challenger": {"heldout": None, "phantom": {"cpm": 0.6}}}
    services._finish(run, v2, metrics, won, REASON if won else "cpm not above", {"evaluate": 1.0})
    run.refresh_from_db()
    v2.refresh_from_db()


@pytest.fixture
def awaiting(challenger, settings):
    settings.PROMOTION_REQUIRES_APPROVAL = True
    run, v1, v2 = challenger
    finish(run, v2, won=True)
    return run, v1, v2


def page(client) -> str:
    return client.get("/models/").content.decode()


def test_without_approval_a_winner_is_promoted_at_once(challenger, settings):
    settings.PROMOTION_REQUIRES_APPROVAL = False
    run, _, v2 = challenger

    finish(run, v2, won=True)

    assert run.decision == "promoted" and modelops.get_champion() == v2


def test_with_approval_a_winner_waits_on_the_models_page(awaiting, admin_client):
    run, v1, v2 = awaiting

    assert run.state == "done" and run.decision == "awaiting" and run.decision_reason == REASON
    assert v2.status == "challenger" and modelops.get_champion() == v1
    assert AuditEvent.objects.filter(action="training.run.awaiting_approval", object_id=str(run.pk)).exists()
    html = page(admin_client)
    assert "1 awaiting approval" in html and "Awaiting approval" in html
    assert f'action="/models/runs/{run.pk}/approve"' in html and f'action="/models/runs/{run.pk}/reject"' in html


def test_an_admin_approves_the_challenger(awaiting, admin_client, cast):
    run, v1, v2 = awaiting

    response = admin_client.post(f"/models/runs/{run.pk}/approve", follow=True)

    assert response.status_code == 200 and "Approved: v2 is the champion" in response.content.decode()
    assert modelops.get_champion() == v2
    run.refresh_from_db()
    assert run.decision == "promoted" and run.decided_by == cast.admin and run.decided_at is not None
    promoted = AuditEvent.objects.get(action="modelops.model.promoted")
    assert promoted.actor_username == "alice-admin" and promoted.details["reason"].startswith("approved by an admin")
    assert AuditEvent.objects.filter(action="training.challenger.approved", actor_username="alice-admin").exists()
    assert admin_client.post(f"/models/runs/{run.pk}/approve").status_code == 404  # decided once


def test_an_admin_rejects_the_challenger_with_a_note(awaiting, admin_client):
    run, v1, v2 = awaiting

    response = admin_client.post(f"/models/runs/{run.pk}/reject", {"note": "misses the part-solid nodules"}, follow=True)

    assert "Rejected v2; v1 stays the champion." in response.content.decode()
    v2.refresh_from_db(), run.refresh_from_db()
    assert v2.status == "rejected" and run.decision == "rejected" and run.decision_note == "misses the part-solid nodules"
    assert modelops.get_champion() == v1
    event = AuditEvent.objects.get(action="training.challenger.rejected")
    assert event.actor_username == "alice-admin" and event.details["note"] == "misses the part-solid nodules"
    html = page(admin_client)
    assert 'name="reason" required minlength="10"' in html and "note: misses the part-solid nodules" in html


@pytest.mark.parametrize("written", ["", "ok", "   too short  "])
def test_a_rejected_challenger_is_not_promoted_without_a_written_reason(awaiting, admin_client, written):
    run, v1, _ = awaiting
    admin_client.post(f"/models/runs/{run.pk}/reject")

    response = admin_client.post("/models/2/promote", {"reason": written}, follow=True)

    assert "V2 was rejected; promoting it anyway needs a written reason (at least 10 characters)" in response.content.decode()
    assert modelops.get_champion() == v1
    assert not AuditEvent.objects.filter(action="modelops.model.promoted").exists()


def test_a_rejected_challenger_is_promoted_with_a_written_reason_in_the_audit_log(awaiting, admin_client):
    run, _, v2 = awaiting
    admin_client.post(f"/models/runs/{run.pk}/reject")

    admin_client.post("/models/2/promote", {"reason": WRITTEN})

    assert modelops.get_champion() == v2
    event = AuditEvent.objects.get(action="modelops.model.promoted")
    assert event.details["reason"] == WRITTEN and event.details["overrides_rejection"] is True


def test_a_challenger_the_rule_rejected_also_needs_a_written_reason(challenger, cast):
    run, v1, v2 = challenger
    finish(run, v2, won=False)
    assert v2.status == "rejected"

    with pytest.raises(modelops.RegistryError, match="needs a written reason"):
        modelops.promote(v2, actor=cast.admin, reason="promoted by an admin")
    modelops.promote(v2, actor=cast.admin, written_reason=WRITTEN)

    assert modelops.get_champion() == v2


def test_the_promote_button_on_a_challenger_awaiting_approval_approves_it(awaiting, admin_client):
    run, _, v2 = awaiting

    admin_client.post("/models/2/promote")

    run.refresh_from_db()
    assert modelops.get_champion() == v2 and run.decision == "promoted"


def test_approval_is_refused_when_the_champion_changed_since_the_measurement(awaiting, admin_client, cast, tmp_path):
    run, v1, v2 = awaiting
    shutil.copy(v1.path, tmp_path / "v3.pt")
    v3 = modelops.register_model_file(tmp_path / "v3.pt", name="finetuned", parent=v1)
    modelops.promote(v3, actor=cast.admin)

    response = admin_client.post(f"/models/runs/{run.pk}/approve", follow=True)

    assert "V2 was measured against v1, but the champion is now v3" in response.content.decode()
    assert modelops.get_champion() == v3
    run.refresh_from_db()
    assert run.decision == "awaiting"


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_radiologists_cannot_decide(awaiting, radiologist_client, action):
    run, v1, v2 = awaiting

    assert radiologist_client.post(f"/models/runs/{run.pk}/{action}").status_code == 403

    v2.refresh_from_db()
    assert v2.status == "challenger" and modelops.get_champion() == v1


def test_the_production_profile_requires_approval_by_default():
    """The default follows DEPLOYMENT (settings.py): read here without the test's own overrides."""
    import subprocess
    import sys
    from pathlib import Path

    from django.core.management.utils import get_random_secret_key

    root = Path(__file__).resolve().parents[2]
    probe = "import django; django.setup(); from django.conf import settings; print(settings.PROMOTION_REQUIRES_APPROVAL)"
    env_dev = {k: v for k, v in __import__("os").environ.items()
               if k not in {"DEPLOYMENT", "PROMOTION_REQUIRES_APPROVAL"}} | {"DJANGO_SETTINGS_MODULE": "webapp.settings"}
    env_prod = env_dev | {"DEPLOYMENT": "production", "SECRET_KEY": get_random_secret_key(), "ALLOWED_HOSTS": "x.example.org",
                          "DICOMWEB_BASE_URL": "https://x.example.org/dicomweb"}
    out = [subprocess.run([sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True).stdout.strip()
           for env in (env_dev, env_prod)]
    assert out == ["False", "True"]


def test_a_challenger_whose_file_changed_is_not_approved(awaiting, admin_client):
    run, v1, v2 = awaiting
    data = bytearray(v2.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    v2.path.write_bytes(bytes(data))

    response = admin_client.post(f"/models/runs/{run.pk}/approve", follow=True)

    assert "does not match its registered SHA-256; refusing to load" in response.content.decode()
    assert modelops.get_champion() == v1
    assert AuditEvent.objects.filter(action="modelops.model.integrity_failed", object_id="2").exists()
    run.refresh_from_db()
    assert run.decision == "awaiting"
