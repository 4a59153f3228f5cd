"""Every read of patient data and every change of users, roles and schedules is in the audit log."""
from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from tests.factories import series_bytes
from webapp.accounts.models import AuditEvent
from webapp.archive import services
from webapp.archive.models import Series, Study

pytestmark = pytest.mark.django_db


@pytest.fixture
def upload(cast):
    batch = services.start_batch(cast.admin)
    for data in series_bytes(2, patient_id="P-ANN", patient_name="Smith^Ann"):
        services.ingest_stream(batch, "x.dcm", io.BytesIO(data))
    services.finish_batch(batch, actor=cast.admin)
    return batch


def events(action, **filters):
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("seq"))


# --- reads ---------------------------------------------------------------------------------------


def test_the_case_list_is_audited_with_the_studies_it_showed(radiologist_client, cast, upload):
    radiologist_client.get(reverse("archive:study_list"), {"q": "Smith"})

    [event] = events("archive.study_list.viewed")
    assert event.actor == cast.radiologist
    assert event.details["studies"] == [Study.objects.get().study_uid]
    assert event.details["filters"] == {"q": "Smith"}


def test_the_study_page_is_audited(radiologist_client, cast, upload):
    study = Study.objects.get()

    radiologist_client.get(reverse("archive:study_detail", args=[study.study_uid]))

    assert events("archive.study.viewed", actor=cast.radiologist, object_id=study.audit_ref()[1])


def test_thumbnails_are_audited_once_per_user_and_study_per_window(radiologist_client, client, cast, upload):
    series = Series.objects.get()
    url = reverse("archive:series_thumbnail", args=[series.series_uid])

    first = radiologist_client.get(url)
    radiologist_client.get(url)
    client.force_login(cast.radiologist2)
    client.get(url)

    assert first.status_code == 200 and first["Cache-Control"] == "private, max-age=3600"
    viewed = events("archive.thumbnail.viewed")
    assert [(e.actor_username, e.object_id) for e in viewed] == [
        ("rita-radiologist", series.study.study_uid), ("ravi-radiologist", series.study.study_uid)]


def test_the_upload_batch_page_is_audited(admin_client, cast, upload):
    admin_client.get(reverse("archive:upload_batch_detail", args=[upload.pk]))

    [event] = events("archive.upload.viewed")
    assert event.actor == cast.admin and event.object_id == str(upload.pk)
    assert event.details["studies"] == [Study.objects.get().study_uid]


def test_the_ai_jobs_page_is_audited_once_while_it_shows_the_same(admin_client, cast):
    admin_client.get(reverse("modelops:jobs"))
    admin_client.get(reverse("modelops:jobs"))  # its 5-second reload

    assert len(events("modelops.jobs.viewed", actor=cast.admin)) == 1


def test_reading_the_audit_log_is_audited(admin_client, cast):
    admin_client.get(reverse("audit_log"), {"object": "1.2.3"})

    [event] = events("accounts.audit_log.viewed")
    assert event.actor == cast.admin and event.details["object"] == "1.2.3"


# --- changes -------------------------------------------------------------------------------------


def test_users_created_changed_and_deleted_are_audited(cast):
    before = len(events("accounts.user.changed", details__name="rita-radiologist"))
    user = User.objects.create_user("nina-new", password="a-long-enough-pass")
    user.is_staff = True
    user.set_password("another-long-pass")
    user.save()
    user.last_name = "Nakamura"
    user.save(update_fields=["last_name"])
    cast.radiologist.save(update_fields=["last_login"])  # a login's bookkeeping is not a change
    user.delete()

    created = events("accounts.user.created", details__name="nina-new")
    changed = events("accounts.user.changed", details__name="nina-new")
    assert len(created) == 1 and "password" not in created[0].details["values"]
    assert changed[0].details["changed"] == {"is_staff": [False, True], "password": "(changed)"}
    assert changed[1].details["changed"] == {"last_name": ["", "Nakamura"]}
    assert len(changed) == 2 and len(events("accounts.user.changed", details__name="rita-radiologist")) == before
    assert events("accounts.user.deleted", details__name="nina-new")
    assert "another-long-pass" not in str(list(AuditEvent.objects.values_list("details", flat=True)))


def test_role_changes_are_audited_from_either_side(cast):
    admins = Group.objects.get(name="admin")

    cast.radiologist.groups.add(admins)
    admins.user_set.remove(cast.radiologist)
    cast.radiologist2.groups.clear()

    changes = [(e.details["username"], {k: v for k, v in e.details.items() if k != "username"})
               for e in events("accounts.user.roles_changed")]
    assert changes[-3:] == [("rita-radiologist", {"added": ["admin"]}),
                            ("rita-radiologist", {"removed": ["admin"]}),
                            ("ravi-radiologist", {"removed": ["radiologist"]})]


def test_a_user_deleted_in_django_admin_names_the_admin(admin_client, cast):
    cast.admin.is_superuser = True
    cast.admin.save()

    response = admin_client.post(reverse("admin:auth_user_delete", args=[cast.outsider.pk]), {"post": "yes"})

    assert response.status_code == 302
    [event] = events("accounts.user.deleted", details__name="oscar-outsider")
    assert event.actor == cast.admin and event.ip_address == "127.0.0.1"


def test_schedule_changes_are_audited_but_not_the_schedulers_bookkeeping(cast):
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    task = PeriodicTask.objects.create(name="Nightly export", task="workers.pipeline_upkeep", interval=every_minute)
    task.enabled = False
    task.save()
    task.total_run_count += 1  # what celery beat saves after each run
    task.save()
    crontab = CrontabSchedule.objects.create(minute="0", hour="2")
    crontab.hour = "3"
    crontab.save()
    task.delete()

    assert events("schedule.task.created", details__name="Nightly export")
    [changed] = events("schedule.task.changed", details__name="Nightly export")
    assert changed.details["changed"] == {"enabled": [True, False]}
    assert events("schedule.task.deleted", details__name="Nightly export")
    assert events("schedule.intervalschedule.created")
    [cron] = events("schedule.crontabschedule.changed")
    assert cron.details["changed"] == {"hour": ["2", "3"]}


def test_a_schedule_edited_in_django_admin_names_the_admin(admin_client, cast):
    cast.admin.is_superuser = True
    cast.admin.save()
    every_minute = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    task = PeriodicTask.objects.create(name="Upkeep copy", task="workers.pipeline_upkeep", interval=every_minute)

    response = admin_client.post(reverse("admin:django_celery_beat_periodictask_delete", args=[task.pk]),
                                 {"post": "yes"})

    assert response.status_code == 302
    [event] = events("schedule.task.deleted", details__name="Upkeep copy")
    assert event.actor == cast.admin
