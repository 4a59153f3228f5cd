"""Defaults installed after every ``migrate``: the nightly retraining schedule (a django-celery-beat
PeriodicTask that admins edit in /django-admin/) and the admin role's rights on those schedules."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NIGHTLY_NAME = "Nightly retraining"
REQUEST_TASK = "workers.request_retraining"
BEAT_MODELS = ("periodictask", "crontabschedule", "intervalschedule", "solarschedule", "clockedschedule")


def install_defaults(sender=None, using="default", verbosity=1, **kwargs) -> None:
    """Idempotent. An admin who edited the schedule keeps their edit; to stop it, untick *enabled*
    (a deleted schedule comes back at the next migrate)."""
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission
    from django_celery_beat.models import CrontabSchedule, PeriodicTask

    from webapp.accounts.models import Role

    if not PeriodicTask.objects.using(using).filter(name=NIGHTLY_NAME).exists():
        crontab, _ = CrontabSchedule.objects.using(using).get_or_create(
            minute="0", hour="2", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC",
        )
        PeriodicTask.objects.using(using).create(
            name=NIGHTLY_NAME, task=REQUEST_TASK, crontab=crontab, kwargs='{"trigger": "schedule"}',
            queue="cpu", description="Fine-tune a challenger from the champion on the signed-off cases, "
            "evaluate both, promote the challenger if it wins. Skipped when nothing was signed off since the last run.",
        )
        if verbosity:
            log.info("registered the nightly retraining schedule (02:00 UTC)")
    # Admins (staff, not superusers) edit schedules in /django-admin/: give the role those rights.
    create_permissions(apps.get_app_config("django_celery_beat"), verbosity=0, using=using)
    group, _ = Group.objects.using(using).get_or_create(name=Role.ADMIN)
    perms = Permission.objects.using(using).filter(content_type__app_label="django_celery_beat",
                                                   content_type__model__in=BEAT_MODELS)
    group.permissions.add(*perms)
