"""Who may change a read, sign it off and reopen it. Admin (IT) is not a clinical role: an admin
changes findings or signs off only when also a radiologist. Sign-off belongs to the assignee (any
radiologist while the case is unassigned). Reopen: the signer or the assignee; anyone else with the
admin role only with a written reason."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from tests.conftest import PASSWORD
from webapp.accounts.models import AuditEvent, Role
from webapp.accounts.services import ensure_user
from webapp.archive.models import Study
from webapp.review import services
from webapp.review.models import Finding, ReviewRevision

from .conftest import act


@pytest.fixture
def people(cast):
    both, _ = ensure_user("ada-admin-radiologist", PASSWORD, Role.ADMIN)
    both.groups.add(Group.objects.get(name=Role.RADIOLOGIST))
    return {"assignee": cast.radiologist, "other radiologist": cast.radiologist2, "admin": cast.admin,
            "admin+radiologist": both}


def assign(study, cast, username):
    services.assign_case(study, cast.admin, base_revision=services.get_case(study).revision, username=username)


def revision(study) -> int:
    return services.get_case(study).revision


@pytest.mark.parametrize("who, allowed", [
    ("assignee", True), ("other radiologist", True), ("admin", False), ("admin+radiologist", True),
])
def test_who_may_change_findings(client, cast, study, findings, people, who, allowed):
    assign(study, cast, "rita-radiologist")
    client.force_login(people[who])

    accepted = act(client, study, base_revision=1, action="accept", finding_id=findings[0].pk)
    added = act(client, study, base_revision=revision(study), action="add", series_uid=study.series.get().series_uid,
                centre_mm=[-95.0, -95.0, -45.0], diameter_mm=4.0)
    commented = act(client, study, base_revision=revision(study), action="comment", text="see prior")

    expected = 200 if allowed else 403
    assert (accepted.status_code, added.status_code, commented.status_code) == (expected,) * 3
    if not allowed:
        assert accepted.json()["error"] == ("Only radiologists change findings or sign off; "
                                            "the admin role is not a clinical role.")
        assert Finding.objects.get(pk=findings[0].pk).status == "proposed" and Finding.objects.count() == 2
        assert revision(study) == 1  # only the assignment


@pytest.mark.parametrize("who, allowed", [
    ("assignee", True), ("other radiologist", False), ("admin", False), ("admin+radiologist", False),
])
def test_only_the_assignee_signs_off_an_assigned_case(client, cast, study, people, who, allowed):
    assign(study, cast, "rita-radiologist")
    client.force_login(people[who])

    response = act(client, study, base_revision=1, action="signoff")

    assert response.status_code == (200 if allowed else 403)
    assert Study.objects.get().review_status == ("signed_off" if allowed else "in_review")  # in review once assigned
    if who in ("other radiologist", "admin+radiologist"):
        assert "assigned to rita-radiologist; only the assignee signs it off" in response.json()["error"]
    if who == "admin":
        assert "not a clinical role" in response.json()["error"]
    assert AuditEvent.objects.filter(action="review.case.signed_off").exists() == allowed


@pytest.mark.parametrize("who, allowed", [
    ("assignee", True), ("other radiologist", True), ("admin", False), ("admin+radiologist", True),
])
def test_any_radiologist_signs_off_an_unassigned_case(client, study, people, who, allowed):
    client.force_login(people[who])

    response = act(client, study, base_revision=0, action="signoff")

    assert response.status_code == (200 if allowed else 403)
    assert Study.objects.get().review_status == ("signed_off" if allowed else "unreviewed")


def test_an_admin_who_is_assigned_and_a_radiologist_signs_off(client, cast, study, people):
    assign(study, cast, "ada-admin-radiologist")
    client.force_login(people["admin+radiologist"])

    assert act(client, study, base_revision=1, action="signoff").status_code == 200


@pytest.mark.parametrize("who, reason, status", [
    ("signer", "", 200),
    ("assignee", "", 200),
    ("other radiologist", "", 403),
    ("other radiologist", "I disagree", 403),
    ("admin", "", 400),
    ("admin", "patient merge: wrong study attached (ticket 88)", 200),
    ("admin+radiologist", "", 400),
    ("admin+radiologist", "second opinion requested by the clinician", 200),
])
def test_who_may_reopen(client, cast, study, people, who, reason, status):
    # assigned to ravi, signed off by rita while the case was hers; then given to ravi
    assign(study, cast, "rita-radiologist")
    services.sign_off_case(study, cast.radiologist, base_revision=1)
    people = {**people, "signer": cast.radiologist, "assignee": cast.radiologist2,
              "other radiologist": ensure_user("rhea-radiologist", PASSWORD, Role.RADIOLOGIST)[0]}
    case = services.get_case(study)
    case.assignee = cast.radiologist2
    case.save(update_fields=["assignee"])
    client.force_login(people[who])

    response = act(client, study, base_revision=2, action="reopen", reason=reason)

    assert response.status_code == status, response.content
    assert Study.objects.get().review_status == ("in_review" if status == 200 else "signed_off")
    if status == 400:
        assert "only with a 'reason'" in response.json()["error"]
    if status == 200:
        event = AuditEvent.objects.get(action="review.case.reopened")
        assert event.actor == people[who] and event.details.get("reason", "") == reason
        notice = response.json()["case"]["notice"]
        assert (notice == "") == (who in ("signer", "assignee"))
        assert ReviewRevision.objects.filter(action="reopen").count() == 1
