"""Login throttling (django-axes), with audit events, and the password rules."""
from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.urls import reverse

from tests.conftest import PASSWORD
from webapp.accounts.models import AuditEvent

pytestmark = pytest.mark.django_db


def login(client, password, username="rita-radiologist"):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_five_failed_logins_lock_the_account_even_for_the_right_password(client, cast, settings):
    responses = [login(client, f"wrong-{i}") for i in range(settings.AXES_FAILURE_LIMIT)]
    locked = login(client, PASSWORD)

    assert [r.status_code for r in responses[:-1]] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    assert responses[-1].status_code == 429 and locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.filter(action="accounts.login.locked_out").first()
    assert event is not None and event.details["username"] == "rita-radiologist"
    assert not AuditEvent.objects.filter(action="accounts.login").exists()


def test_other_accounts_are_not_locked(client, cast, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"wrong-{i}")

    response = login(client, PASSWORD, username="ravi-radiologist")

    assert response.status_code == 302


def test_the_lock_ends_after_the_cool_off(client, cast, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(client, f"wrong-{i}")
    assert login(client, PASSWORD).status_code == 429

    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time
                                 - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    response = login(client, PASSWORD)

    assert response.status_code == 302 and response["Location"] == reverse("archive:study_list")


def test_a_successful_login_resets_the_count(client, cast, settings):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, f"wrong-{i}")
    assert login(client, PASSWORD).status_code == 302
    client.logout()

    responses = [login(client, f"again-{i}") for i in range(settings.AXES_FAILURE_LIMIT - 1)]

    assert {r.status_code for r in responses} == {200}
    assert login(client, PASSWORD).status_code == 302


@pytest.mark.parametrize("password", ["short-pass1", "12345678901234", "password1234"])
def test_weak_passwords_are_refused(password):
    with pytest.raises(ValidationError):
        validate_password(password)


def test_a_twelve_character_password_is_accepted():
    validate_password("tq7-vmx-2kpz")


def test_an_admin_cannot_set_an_eleven_character_password_in_django_admin(admin_client, cast):
    cast.admin.is_superuser = True
    cast.admin.save()
    url = reverse("admin:auth_user_password_change", args=[cast.radiologist.pk])

    response = admin_client.post(url, {"password1": "x7-kq-mv-2p", "password2": "x7-kq-mv-2p"})

    assert response.status_code == 200 and "at least 12 characters" in response.content.decode()
    cast.radiologist.refresh_from_db()
    assert cast.radiologist.check_password(PASSWORD)
