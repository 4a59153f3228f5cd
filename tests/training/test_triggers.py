"""When retraining is queued: every N sign-offs (once per crossing, whatever races), the nightly
beat schedule (registered, editable by admins), an admin's button; never two runs at a time."""
from __future__ import annotations

import json
import threading

import pytest
from django.db import IntegrityError, connection, transaction
from django_celery_beat.models import PeriodicTask

from webapp.training import services
from webapp.training.models import TrainingRun


@pytest.fixture
def every_3(settings):
    settings.RETRAIN_EVERY_N_SIGNED_OFF = 3
    settings.RETRAIN_HELDOUT_SHARE = 0.0


def _race(n: int, target) -> list:
    """Run ``target`` in n threads released together; returns their results."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i):
        try:
            barrier.wait()
            results[i] = target()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_the_sign_off_trigger_fires_once_per_crossing_even_when_sign_offs_race(transactional_db, cases, every_3):
    cases.signed_off()
    assert services.request_retraining("signoffs") is None  # 1 of 3

    results = _race(4, lambda: cases.signed_off() and services.request_retraining("signoffs"))  # 5 sign-offs now

    runs = list(TrainingRun.objects.all())
    assert len(runs) == 1 and sum(r is not None for r in results) == 1
    assert runs[0].trigger == "signoffs" and runs[0].state == "queued"
    assert services.request_retraining("signoffs") is None  # the same crossing, asked again

    TrainingRun.objects.update(state="done")
    while services.signoff_count() < runs[0].signoffs_seen + 2:  # N counts from what the last run saw
        cases.signed_off()
    assert services.request_retraining("signoffs") is None
    cases.signed_off()
    assert services.request_retraining("signoffs") is not None
    assert TrainingRun.objects.count() == 2


def test_the_sign_off_trigger_waits_for_n_new_sign_offs(db, cases, every_3):
    cases.signed_off(), cases.signed_off()
    assert services.request_retraining("signoffs") is None
    cases.signed_off()
    run = services.request_retraining("signoffs")
    assert run is not None and run.signoffs_seen == 3 and run.trigger_key == "signoffs:after-run-0"


def test_only_one_run_is_queued_or_running_at_a_time(db, cases, cast, every_3):
    cases.signed_off()
    run = services.request_retraining("manual", actor=cast.admin)

    with pytest.raises(services.TrainingError, match="already queued"):
        services.request_retraining("manual", actor=cast.admin)
    with pytest.raises(IntegrityError), transaction.atomic():  # the database's own guard
        TrainingRun.objects.create(trigger="manual", state="running")
    TrainingRun.objects.filter(pk=run.pk).update(state="failed")
    assert services.request_retraining("manual", actor=cast.admin) is not None


def test_an_admin_request_without_training_data_is_refused(db, cases, cast, settings):
    settings.RETRAIN_HELDOUT_SHARE = 0.999  # every study held out
    cases.signed_off()
    with pytest.raises(services.TrainingError, match="Too few signed-off training cases"):
        services.request_retraining("manual", actor=cast.admin)
    assert not TrainingRun.objects.exists()


def test_the_nightly_run_is_skipped_when_nothing_new_was_signed_off(db, cases, every_3):
    cases.signed_off()
    first = services.request_retraining("schedule")
    assert first is not None and first.trigger_key.startswith("schedule:")
    TrainingRun.objects.update(state="done")
    assert services.request_retraining("schedule") is None  # nothing new
    cases.signed_off()
    assert services.request_retraining("schedule") is None  # once a day, even with new data


def test_a_running_run_whose_worker_died_fails_and_frees_the_slot(db, cases, cast, settings):
    settings.RETRAIN_HELDOUT_SHARE = 0.0
    cases.signed_off()
    run = services.request_retraining("manual", actor=cast.admin)
    services.claim(run.pk)
    assert services.recover_stalled_training(stale_seconds=3600) == []
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at="2000-01-01T00:00Z")

    assert services.recover_stalled_training() == [run.pk]
    run.refresh_from_db()
    assert run.state == "failed" and "no heartbeat" in run.error
    assert services.request_retraining("manual", actor=cast.admin) is not None


def test_the_nightly_schedule_is_registered_and_admins_can_edit_it(admin_client):
    task = PeriodicTask.objects.get(name="Nightly retraining")
    assert task.enabled and task.task == "workers.request_retraining"
    assert json.loads(task.kwargs) == {"trigger": "schedule"}
    assert (task.crontab.minute, task.crontab.hour) == ("0", "2")

    page = admin_client.get(f"/django-admin/django_celery_beat/periodictask/{task.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(name=task.name, regtask="workers.request_retraining", task="workers.request_retraining",
                crontab=task.crontab_id, kwargs=task.kwargs, args="[]", enabled="", headers="{}",
                expire_seconds="", priority="", queue="cpu", exchange="", routing_key="", description=task.description,
                one_off="", start_time_0="", start_time_1="", expires_0="", expires_1="", last_run_at_0="",
                last_run_at_1="", total_run_count="0", interval="", solar="", clocked="")
    response = admin_client.post(f"/django-admin/django_celery_beat/periodictask/{task.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:3000]
    task.refresh_from_db()
    assert task.enabled is False


def test_a_radiologist_cannot_edit_schedules(radiologist_client):
    response = radiologist_client.get("/django-admin/django_celery_beat/periodictask/")
    assert response.status_code in (302, 403)
