"""Logins and the audit log."""
import pytest
from django.urls import reverse

from tests.conftest import PASSWORD
from webapp.accounts.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_logins_and_failed_logins_are_audited(client, cast):
    client.post(reverse("login"), {"username": "rita-radiologist", "password": "wrong"})
    response = client.post(reverse("login"), {"username": "rita-radiologist", "password": PASSWORD})

    assert response.status_code == 302 and response["Location"] == reverse("archive:study_list")
    assert AuditEvent.objects.filter(action="accounts.login_failed", details__username="rita-radiologist").exists()
    assert AuditEvent.objects.get(action="accounts.login").actor == cast.radiologist


def test_the_audit_log_is_append_only(cast):
    event = AuditEvent.objects.create(action="test.thing")

    event.action = "test.changed"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="x")


def test_admins_read_the_audit_log_and_radiologists_cannot(client, cast):
    client.force_login(cast.admin)
    client.get(reverse("archive:study_list"))
    AuditEvent.objects.create(action="archive.study.viewed", actor_username="rita-radiologist", object_id="1.2.3")

    page = client.get(reverse("audit_log"), {"action": "archive."})
    client.force_login(cast.radiologist)
    denied = client.get(reverse("audit_log"))

    assert page.status_code == 200 and "archive.study.viewed" in page.content.decode()
    assert denied.status_code == 403


def test_the_health_check_needs_no_login(client, db):
    assert client.get(reverse("healthz")).json() == {"status": "ok"}


def test_behind_our_proxy_the_audit_log_records_the_client_not_the_proxy(settings, rf):
    from webapp.accounts.services import client_ip

    request = rf.get("/studies/", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="10.20.30.40")
    settings.BEHIND_PROXY = False
    assert client_ip(request) == "127.0.0.1"  # no proxy: the header is the client's word, ignored
    settings.BEHIND_PROXY = True
    assert client_ip(request) == "10.20.30.40"
    forged = rf.get("/studies/", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="<script>")
    assert client_ip(forged) == "127.0.0.1"
