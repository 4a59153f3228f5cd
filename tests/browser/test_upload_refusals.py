"""A refused upload shows each file's reason in the browser, not a generic failure."""
from __future__ import annotations

import pytest

from tests.archive.hostile_files import pixels
from tests.browser.conftest import log_in, screenshot
from tests.conftest import PASSWORD
from webapp.archive.models import Instance

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_upload_whose_every_file_is_refused_shows_each_reason(page, cast, tmp_path):
    bad = tmp_path / "too-long.dcm"
    bad.write_bytes(pixels(514)())
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")

    log_in(page, cast.admin.username, PASSWORD)
    page.goto("/upload/")
    page.wait_for_selector("body[data-upload-ready='1']")
    page.set_input_files("#file-input", [bad, junk])
    page.wait_for_selector("body[data-upload-done='1']", timeout=60_000)
    screenshot(page, "upload-all-refused")

    table = page.inner_text("#results tbody")
    assert page.inner_text("#n-rejected") == "2"
    assert "pixel data too long: it is 514 bytes" in table and "not a DICOM file" in table
    assert "upload failed" not in table
    assert "Done: 0 stored, 0 duplicate, 2 rejected" in page.inner_text("#status-line")
    assert Instance.objects.count() == 0
    assert page.js_errors == []
