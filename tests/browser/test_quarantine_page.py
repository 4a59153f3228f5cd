"""An admin finds a late instance of a signed-off study on the Quarantine page and releases it; the
assigned radiologist then sees why the case is open again in the case browser."""
from __future__ import annotations

import io

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.conftest import PASSWORD
from tests.factories import ct_slice, to_bytes
from webapp.archive import services as archive
from webapp.archive.models import Instance, QuarantinedInstance, Study
from webapp.review import services as review

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_releases_a_quarantined_instance_and_the_reader_is_told(page, cast, monkeypatch):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda name, *a, **k: None)  # no worker in this test
    batch = archive.start_batch(cast.admin)
    for i in range(1, 4):
        archive.ingest_stream(batch, f"{i}.dcm", io.BytesIO(to_bytes(ct_slice(index=i))))
    study = Study.objects.get()
    review.assign_case(study, cast.radiologist, base_revision=0, username=cast.radiologist.username)
    review.sign_off_case(study, cast.radiologist, base_revision=1)
    late = archive.ingest_stream(archive.start_batch(cast.admin), "late.dcm", io.BytesIO(to_bytes(ct_slice(index=0))))
    assert late.outcome == "quarantined"

    log_in(page, cast.admin.username, PASSWORD)
    page.click("nav >> text=Quarantine")
    row = page.locator("tr.quarantine-row")
    assert row.count() == 1 and row.get_attribute("data-sop-uid") == late.sop_uid and "was signed off" in row.inner_text()
    screenshot(page, "quarantine-held")
    row.locator("button", has_text="Release").click()
    page.wait_for_selector("text=Released into the study")
    assert page.locator("tr.quarantine-row").count() == 0
    screenshot(page, "quarantine-released")
    assert Instance.objects.filter(sop_uid=late.sop_uid).exists()
    assert QuarantinedInstance.objects.get().state == "released" and page.js_errors == []

    page.click("form[action='/logout/'] button")
    log_in(page, cast.radiologist.username, PASSWORD)
    notice = page.locator(".case-notice")
    assert "added an image that arrived after sign-off" in notice.inner_text()
    screenshot(page, "worklist-case-notice")

    page.goto(f"/studies/{study.study_uid}/view/")
    strip = page.wait_for_selector("#case-notice:not([hidden])", timeout=60_000)
    assert "added an image that arrived after sign-off" in strip.inner_text()
    screenshot(page, "viewer-case-notice")
