"""What goes to the audit log from Django's own signals: logins, lockouts, and every change of users,
roles and schedules, wherever it is made (RadLoop pages, /django-admin/, a shell, a migration).

Model signals do not know who made a change; the request being served (see middleware.py) does.
"""
from __future__ import annotations

import datetime as dt
import time

from axes.signals import user_locked_out
from django.contrib.auth.models import Group, User
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver
from django_celery_beat.models import (ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask,
                                       SolarSchedule)

from .middleware import SESSION_STARTED_KEY, current_request
from .services import audit, forget_roles


def _actor():
    request = current_request()
    user = getattr(request, "user", None) if request is not None else None
    return (user if getattr(user, "is_authenticated", False) else None), request


# --- logins --------------------------------------------------------------------------------------


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_STARTED_KEY] = time.time()  # the session's absolute age counts from here
    audit(user, "accounts.login", object_type="user", object_id=user.pk, request=request)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        audit(user, "accounts.logout", object_type="user", object_id=user.pk, request=request)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    audit(
        None,
        "accounts.login_failed",
        object_type="user",
        details={"username": str(credentials.get("username", ""))[:150],
                 "locked_out": bool(getattr(request, "axes_locked_out", False))},
        request=request,
    )


@receiver(user_locked_out)
def _locked_out(sender, request, username, ip_address, **kwargs):
    from django.conf import settings

    audit(None, "accounts.login.locked_out", object_type="user", request=request,
          details={"username": str(username or "")[:150], "failure_limit": settings.AXES_FAILURE_LIMIT,
                   "cool_off_minutes": settings.AXES_COOLOFF_TIME.total_seconds() / 60})


# --- roles ---------------------------------------------------------------------------------------


@receiver(m2m_changed, sender=User.groups.through)
def _roles_changed(sender, instance, action, pk_set, reverse, **kwargs):
    if action == "pre_clear":  # post_clear does not say what was removed
        instance._audit_cleared = (
            list(instance.user_set.values_list("pk", flat=True)) if reverse
            else list(instance.groups.values_list("name", flat=True))
        )
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    actor, request = _actor()
    verb = {"post_add": "added", "post_remove": "removed", "post_clear": "removed"}[action]
    if not reverse:  # user.groups.add(...)
        names = (getattr(instance, "_audit_cleared", []) if action == "post_clear"
                 else sorted(Group.objects.filter(pk__in=pk_set or ()).values_list("name", flat=True)))
        forget_roles(instance.pk)
        if names:
            audit(actor, "accounts.user.roles_changed", object_type="user", object_id=instance.pk, request=request,
                  details={"username": instance.get_username(), verb: names})
        return
    # group.user_set.add(...): the group's members changed
    user_ids = getattr(instance, "_audit_cleared", []) if action == "post_clear" else sorted(pk_set or ())
    for user_id in user_ids:
        forget_roles(user_id)
        username = User.objects.filter(pk=user_id).values_list("username", flat=True).first() or ""
        audit(actor, "accounts.user.roles_changed", object_type="user", object_id=user_id, request=request,
              details={"username": username, verb: [instance.name]})


# --- users, groups and schedules: created / changed / deleted ------------------------------------

# Fields whose change is not an administrative act: the scheduler's own book-keeping, login times.
_UNTRACKED = {"last_login", "date_joined", "last_run_at", "total_run_count", "date_changed", "no_changes"}
_SECRET = {"password"}


def _jsonable(value):
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _tracked_fields(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if not f.primary_key and f.attname not in _UNTRACKED]


def _values(instance, fields) -> dict:
    return {f: _jsonable(getattr(instance, f)) for f in fields}


def _track(model, action_prefix: str, object_type: str, describe):
    """Audit ``<prefix>.created|changed|deleted`` for every save that changes a tracked field."""
    fields = _tracked_fields(model)

    def before(sender, instance, raw=False, update_fields=None, **kwargs):
        instance._audit_before = None
        if raw or instance.pk is None or (update_fields is not None and not set(update_fields) & set(fields)):
            return
        row = sender._default_manager.filter(pk=instance.pk).values(*fields).first()
        instance._audit_before = {f: _jsonable(v) for f, v in row.items()} if row else None

    def after(sender, instance, created, raw=False, **kwargs):
        if raw:
            return
        actor, request = _actor()
        if created:
            values = {f: v for f, v in _values(instance, fields).items() if f not in _SECRET}
            audit(actor, f"{action_prefix}.created", object_type=object_type, object_id=instance.pk,
                  request=request, details={"name": describe(instance), "values": values})
            return
        old = getattr(instance, "_audit_before", None)
        if old is None:
            return
        new = _values(instance, fields)
        changed = {f: ("(changed)" if f in _SECRET else [old[f], new[f]]) for f in fields if old[f] != new[f]}
        if changed:
            audit(actor, f"{action_prefix}.changed", object_type=object_type, object_id=instance.pk,
                  request=request, details={"name": describe(instance), "changed": changed})

    def deleted(sender, instance, **kwargs):
        actor, request = _actor()
        audit(actor, f"{action_prefix}.deleted", object_type=object_type, object_id=instance.pk,
              request=request, details={"name": describe(instance)})

    uid = f"audit:{model._meta.label}"
    pre_save.connect(before, sender=model, weak=False, dispatch_uid=uid)
    post_save.connect(after, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=uid)


_track(User, "accounts.user", "user", lambda u: u.get_username())
_track(Group, "accounts.role", "role", lambda g: g.name)
_track(PeriodicTask, "schedule.task", "periodic_task", lambda t: t.name)
for _model in (CrontabSchedule, IntervalSchedule, SolarSchedule, ClockedSchedule):
    _track(_model, "schedule." + _model._meta.model_name, _model._meta.model_name, str)
