"""Logins, logouts and failed logins go to the audit log."""
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed
from django.dispatch import receiver

from .services import audit, forget_roles


@receiver(m2m_changed, sender=User.groups.through)
def _roles_changed(sender, instance, action, pk_set, **kwargs):
    if action in ("post_add", "post_remove", "post_clear"):
        if isinstance(instance, User):
            forget_roles(instance.pk)
        else:  # a group's members changed
            for user_id in pk_set or ():
                forget_roles(user_id)


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
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
        details={"username": str(credentials.get("username", ""))[:150]},
        request=request,
    )
