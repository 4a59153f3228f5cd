"""API tokens: expiry, revocation (command and admin page), all audited, effective at once."""
from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from webapp.accounts.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def create(*args) -> str:
    out = io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def qido(client, key):
    return client.get("/dicomweb/studies", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_new_token_expires_after_the_default_days_and_creation_is_audited(cast, settings):
    key = create("rita-radiologist", "--name", "script")

    token = ApiToken.objects.get()
    assert key.startswith("rlt_") and token.key_hash == ApiToken.hash_key(key)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=settings.API_TOKEN_DAYS))) < timedelta(minutes=1)
    event = AuditEvent.objects.get(action="accounts.api_token.created")
    assert event.object_id == str(token.pk) and event.details["user"] == "rita-radiologist"


def test_the_lifetime_is_chosen_at_creation(cast):
    create("rita-radiologist", "--days", "7")

    assert ApiToken.objects.get().expires_at < timezone.now() + timedelta(days=7, minutes=1)
    with pytest.raises(CommandError):
        create("rita-radiologist", "--days", "0")


def test_an_expired_token_gets_401_json(client, cast):
    key = create("rita-radiologist")
    assert qido(client, key).status_code in (200, 204)

    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = qido(client, key)

    assert response.status_code == 401 and "error" in response.json()


def test_revoke_command_stops_a_token_at_once_and_is_audited(client, cast):
    key = create("rita-radiologist", "--name", "pacs")
    token = ApiToken.objects.get()
    assert qido(client, key).status_code in (200, 204)  # used once: any cache would hold it now

    out = io.StringIO()
    call_command("revoke_api_token", str(token.pk), stdout=out)

    assert "revoked" in out.getvalue()
    assert qido(client, key).status_code == 401
    assert AuditEvent.objects.filter(action="accounts.api_token.revoked", object_id=str(token.pk)).count() == 1


def test_revoke_command_by_user_and_unknown_ids(cast):
    create("rita-radiologist")
    create("rita-radiologist")

    call_command("revoke_api_token", "--user", "rita-radiologist", stdout=io.StringIO())

    assert not ApiToken.objects.filter(revoked_at__isnull=True).exists()
    with pytest.raises(CommandError, match="no token with id 999"):
        call_command("revoke_api_token", "999", stdout=io.StringIO())


def test_admins_see_every_token_and_revoke_it_on_the_tokens_page(admin_client, client, cast):
    key = create("rita-radiologist", "--name", "night-export")
    token = ApiToken.objects.get()
    qido(client, key)

    page = admin_client.get(reverse("api_tokens"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "night-export" in html and "rita-radiologist" in html and "Revoke" in html
    assert f"{token.expires_at:%Y-%m-%d}" in html and "never" not in html  # last used is shown

    response = admin_client.post(reverse("api_token_revoke", args=[token.pk]))

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and qido(client, key).status_code == 401
    event = AuditEvent.objects.get(action="accounts.api_token.revoked")
    assert event.actor == cast.admin
    assert "Revoke</button>" not in admin_client.get(reverse("api_tokens")).content.decode()


def test_radiologists_cannot_see_or_revoke_tokens(radiologist_client, cast):
    create("alice-admin")
    token = ApiToken.objects.get()

    assert radiologist_client.get(reverse("api_tokens")).status_code == 403
    assert radiologist_client.post(reverse("api_token_revoke", args=[token.pk])).status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None
