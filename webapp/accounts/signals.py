"""Logins, logouts and failed logins go to the audit log."""
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from .services import audit


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
