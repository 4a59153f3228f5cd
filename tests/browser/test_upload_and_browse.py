"""An admin uploads a study in a real browser and finds it in the case browser."""
from __future__ import annotations

import io
import zipfile

import pytest

from tests.browser.conftest import log_in, screenshot
from tests.conftest import PASSWORD
from tests.factories import series_bytes
from webapp.archive.models import Instance, Study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_admin_uploads_files_and_a_zip_and_sees_the_outcomes(page, cast, tmp_path, monkeypatch):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")  # no worker in this test
    folder = tmp_path / "scan"
    folder.mkdir()
    paths = []
    for i, data in enumerate(series_bytes(6, rows=64, columns=64, patient_name="Browser^Test", patient_id="BROWSER-1")):
        paths.append(folder / f"IM{i:03d}.dcm")
        paths[-1].write_bytes(data)
    (folder / "readme.txt").write_text("not an image")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, data in enumerate(series_bytes(3, rows=64, columns=64, study="zip-study", series="zip-series", patient_id="ZIP-1")):
            zf.writestr(f"export/IM{i}", data)
        zf.writestr("../evil.dcm", b"x")
    (folder / "export.zip").write_bytes(buf.getvalue())

    log_in(page, cast.admin.username, PASSWORD)
    page.click("text=Upload")
    page.wait_for_selector("body[data-upload-ready='1']")
    page.set_input_files("#file-input", [*paths, folder / "readme.txt", folder / "export.zip"])
    page.wait_for_selector("body[data-upload-done='1']", timeout=60_000)
    shot = screenshot(page, "upload-done")

    assert page.inner_text("#n-stored") == "9"
    assert page.inner_text("#n-rejected") == "2"
    assert "Done: 9 stored, 0 duplicate, 2 rejected" in page.inner_text("#status-line")
    rejected = page.inner_text("#results tbody")
    assert "readme.txt" in rejected and "not a DICOM file" in rejected
    assert "refused: '..' in a path inside the zip" in rejected
    assert page.locator("#progress").evaluate("p => p.value") == 1
    assert "Open Browser, Test · BROWSER-1 · 2026-01-02" in page.inner_text("#study-links")
    assert Instance.objects.count() == 9 and shot.exists()

    page.click("text=Case browser")
    page.fill("input[name=q]", "BROWSER")
    page.click("button:has-text('Apply')")
    rows = page.locator("tr.study-row")
    assert rows.count() == 1
    assert "Browser, Test" in rows.first.inner_text()
    assert rows.first.locator("a.open-viewer").get_attribute("href").endswith("/view/")  # the reader's way in
    rows.first.locator("a:has-text('details')").click()  # the admin's study page
    page.wait_for_selector(".series-card")
    page.wait_for_function("document.querySelector('.series-card img').naturalWidth > 0")
    screenshot(page, "study-page")
    assert "0.700 × 0.700 mm" in page.inner_text(".series-card")
    assert page.js_errors == []


def test_uploading_the_same_files_again_reports_duplicates(page, cast, tmp_path, monkeypatch):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    paths = []
    for i, data in enumerate(series_bytes(3)):
        paths.append(tmp_path / f"{i}.dcm")
        paths[-1].write_bytes(data)
    log_in(page, cast.admin.username, PASSWORD)

    for expected in ("3 stored, 0 duplicate", "0 stored, 3 duplicate"):
        page.goto("/upload/")
        page.set_input_files("#file-input", paths)
        page.wait_for_selector("body[data-upload-done='1']", timeout=60_000)
        assert expected in page.inner_text("#status-line")
    assert Study.objects.count() == 1 and Instance.objects.count() == 3


def test_a_radiologist_sees_no_upload_link_and_is_refused_the_page(page, cast):
    log_in(page, cast.radiologist.username, PASSWORD)

    assert page.locator("nav >> text=Upload").count() == 0
    response = page.goto("/upload/")
    assert response.status == 403


def test_an_admin_uploads_a_whole_folder(page, cast, tmp_path, monkeypatch):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    folder = tmp_path / "CT_EXPORT"
    (folder / "series1").mkdir(parents=True)
    for i, data in enumerate(series_bytes(4)):
        (folder / "series1" / f"IM{i}").write_bytes(data)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    log_in(page, cast.admin.username, PASSWORD)
    page.goto("/upload/")

    page.set_input_files("#folder-input", folder)
    page.wait_for_selector("body[data-upload-done='1']", timeout=60_000)

    assert "Done: 4 stored, 0 duplicate, 0 rejected, 1 skipped." in page.inner_text("#status-line")
    table = page.inner_text("#results tbody")
    assert "CT_EXPORT/series1/IM0" in table  # folder paths are kept in the report
    assert "operating-system metadata file" in table
