"""Sessions end when idle and at a maximum age; pages are not cached; `next` never leaves the site."""
from __future__ import annotations

import time

import pytest
from django.urls import reverse

from tests.conftest import PASSWORD
from webapp.accounts.middleware import SESSION_SEEN_KEY, SESSION_STARTED_KEY
from webapp.accounts.models import AuditEvent

pytestmark = pytest.mark.django_db


def shift_session(client, **ages_seconds):
    """Move the session's clocks back: started / seen that many seconds ago."""
    session = client.session
    for name, age in ages_seconds.items():
        key = {"started": SESSION_STARTED_KEY, "seen": SESSION_SEEN_KEY}[name]
        session[key] = time.time() - age
    session.save()


def test_a_session_idle_longer_than_the_timeout_ends(radiologist_client, cast, settings):
    assert radiologist_client.get(reverse("archive:study_list")).status_code == 200
    shift_session(radiologist_client, seen=settings.SESSION_IDLE_TIMEOUT_SECONDS + 5)

    response = radiologist_client.get(reverse("archive:study_list"))

    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    event = AuditEvent.objects.get(action="accounts.session.expired")
    assert event.actor == cast.radiologist and event.details == {"reason": "idle"}
    assert radiologist_client.get(reverse("archive:study_list")).status_code == 302  # stays logged out


def test_a_session_in_use_stays_until_the_idle_timeout(radiologist_client, settings):
    radiologist_client.get(reverse("archive:study_list"))
    shift_session(radiologist_client, seen=settings.SESSION_IDLE_TIMEOUT_SECONDS - 60)

    assert radiologist_client.get(reverse("archive:study_list")).status_code == 200


def test_a_busy_session_ends_at_the_maximum_age(radiologist_client, settings):
    radiologist_client.get(reverse("archive:study_list"))
    shift_session(radiologist_client, started=settings.SESSION_MAX_AGE_SECONDS + 5, seen=10)

    response = radiologist_client.get(reverse("archive:study_list"))

    assert response.status_code == 302
    assert AuditEvent.objects.get(action="accounts.session.expired").details == {"reason": "max_age"}


def test_the_idle_timeout_is_a_setting(radiologist_client, settings):
    settings.SESSION_IDLE_TIMEOUT_SECONDS = 120
    radiologist_client.get(reverse("archive:study_list"))
    shift_session(radiologist_client, seen=150)

    assert radiologist_client.get(reverse("archive:study_list")).status_code == 302


def test_an_expired_session_gets_401_from_the_review_api(radiologist_client, settings):
    radiologist_client.get(reverse("archive:study_list"))
    shift_session(radiologist_client, seen=settings.SESSION_IDLE_TIMEOUT_SECONDS + 5)

    response = radiologist_client.get("/api/review/next/")

    assert response.status_code in (401, 302) and response.status_code != 200


def test_pages_are_sent_private_and_no_store(radiologist_client, client):
    page = radiologist_client.get(reverse("archive:study_list"))
    login_page = client.get(reverse("login"))

    assert "no-store" in page["Cache-Control"] and "private" in page["Cache-Control"]
    assert "no-store" in login_page["Cache-Control"]


# --- open redirects ------------------------------------------------------------------------------

EVIL = ["//evil.example", "https://evil.example", "https://evil.example/studies/", "///evil.example",
        "https:evil.example", "\\\\evil.example", "javascript:alert(1)"]


@pytest.mark.parametrize("target", EVIL)
def test_login_never_redirects_to_another_site(client, cast, target):
    response = client.post(reverse("login") + "?next=" + target,
                           {"username": "rita-radiologist", "password": PASSWORD, "next": target})

    assert response.status_code == 302 and response["Location"] == reverse("archive:study_list")


def test_login_follows_a_local_next(client, cast):
    response = client.post(reverse("login"), {"username": "rita-radiologist", "password": PASSWORD,
                                              "next": "/studies/?assigned=mine"})

    assert response["Location"] == "/studies/?assigned=mine"


@pytest.mark.parametrize("target", EVIL)
def test_the_login_page_does_not_offer_another_site_as_next(client, target):
    response = client.get(reverse("login"), {"next": target})

    assert "evil.example" not in response.content.decode()


@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example"])
def test_admin_actions_never_redirect_to_another_site(admin_client, target):
    response = admin_client.post(reverse("modelops:rerun_unreviewed"), {"next": target})

    assert response.status_code == 302 and "evil" not in response["Location"]


def test_admin_actions_follow_a_local_next(admin_client):
    response = admin_client.post(reverse("training:rerun_unreviewed"), {"next": reverse("training:registry")})

    assert response["Location"] == reverse("training:registry")
