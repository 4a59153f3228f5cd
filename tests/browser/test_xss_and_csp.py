"""Hostile DICOM text in a real Chromium: a study stored over STOW-RS whose SeriesDescription is markup
and whose PatientName holds `<script>` and a U+202E (right-to-left override) is shown as text on every
page a radiologist opens, runs nothing, reorders nothing around it, and the pages run under a strict
Content-Security-Policy without a single violation (the viewer decodes its images under it too)."""
from __future__ import annotations

import urllib.request

import pytest
from pydicom.uid import JPEG2000Lossless

from tests.browser.conftest import log_in, screenshot
from tests.conftest import PASSWORD
from tests.factories import ct_slice, to_bytes
from webapp.accounts.models import ApiToken
from webapp.archive.models import Study

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

READY = "window.radloopViewer && window.radloopViewer.ready"
LOADED = "window.radloopViewer && window.radloopViewer.loaded"
BOUNDARY = "RadLoopXssBoundary"
SERIES_MARKUP = "<img src=x onerror=alert(1)>"
RLO = "\u202e"
PATIENT_NAME = f"Evil{RLO}Kcab^<script>alert(2)</script>"  # shown as "Evil‮Kcab, <script>alert(2)</script>"
SHOWN_NAME = f"Evil{RLO}Kcab, <script>alert(2)</script>"

# Every CSP violation the page sees, from the first byte (an init script runs before the page's own,
# outside the page's policy).
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""

# x of a text's first and last character on screen: left-to-right text has first < last.
CHAR_X = """([selector, needle]) => {
  const walker = document.createTreeWalker(document.querySelector(selector), NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.indexOf(needle);
    if (at < 0) continue;
    const x = (i) => { const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1); return r.getBoundingClientRect().left; };
    return [x(at), x(at + needle.length - 1)];
  }
  return null;
}"""


def stow(base_url: str, token: str, datasets) -> int:
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(ds) + b"\r\n"
                    for ds in datasets) + f"--{BOUNDARY}--\r\n".encode()
    request = urllib.request.Request(f"{base_url}/dicomweb/studies", data=body, method="POST", headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status


def hostile_slices(n: int, *, study: str, patient_id: str, transfer_syntax=None):
    out = []
    for i in range(n):
        ds = ct_slice(index=i, rows=64, columns=64, study=study, series=f"{study}-series", patient_id=patient_id,
                      patient_name=PATIENT_NAME, SpecificCharacterSet="ISO_IR 192")
        ds.SeriesDescription = SERIES_MARKUP
        if transfer_syntax is not None:
            ds.compress(transfer_syntax)
        out.append(ds)
    return out


@pytest.fixture
def watched(browser, live_server):
    """A page with the app's policy enforced (the shared ``page`` fixture bypasses it), recording every
    dialog, CSP violation, console error and uncaught exception it sees."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.dialogs, page.console_errors, page.js_errors = [], [], []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    yield page
    context.close()


def wait_until(page, expression: str, timeout_s: float = 60):
    """Polls a JS expression from outside the page: Playwright's wait_for_function would eval() it inside
    the page, which the policy refuses."""
    for _ in range(int(timeout_s * 10)):
        if page.evaluate(expression):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"still false after {timeout_s} s: {expression}")


def csp_violations(page) -> list[str]:
    return page.evaluate("window.__csp") + [m for m in page.console_errors if "Content Security Policy" in m]


def assert_no_markup_ran(page):
    assert page.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
    assert page.js_errors == []


def assert_csp_header(response):
    policy = response.headers.get("content-security-policy", "")
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src.replace("'wasm-unsafe-eval'", "")
    assert "object-src 'none'" in policy and "base-uri 'none'" in policy and "frame-ancestors 'none'" in policy


def open_viewer(page, study):
    response = page.goto(f"/studies/{study.study_uid}/view/")
    wait_until(page, READY, 30)
    wait_until(page, LOADED, 60)
    return response


def test_hostile_dicom_text_is_shown_as_text_under_a_strict_csp(watched, live_server, cast, monkeypatch):
    page = watched
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")  # no worker here
    _, token = ApiToken.issue(cast.admin, "pacs")
    assert stow(live_server.url, token, hostile_slices(6, study="xss-study", patient_id="XSS-1")) == 200
    study = Study.objects.get(patient_id="XSS-1")
    assert study.series.get().description == SERIES_MARKUP

    log_in(page, cast.radiologist.username, PASSWORD)

    # Case browser: the name is text, isolated, and the "details" link next to it still reads left to right.
    response = page.goto("/studies/?q=XSS-1")
    assert_csp_header(response)
    row = page.locator(f"tr[data-study-uid='{study.study_uid}']")
    assert row.locator("a.open-viewer").inner_text() == SHOWN_NAME
    left, right = page.evaluate(CHAR_X, [f"tr[data-study-uid='{study.study_uid}']", "details"])
    assert left < right, "the U+202E in the patient name reversed the text next to it"
    screenshot(page, "xss-case-browser")
    assert_no_markup_ran(page)

    # Study page: the series heading shows the markup as characters.
    response = page.goto(f"/studies/{study.study_uid}/")
    assert_csp_header(response)
    assert page.locator(".series-card h3 .series-description").inner_text() == SERIES_MARKUP
    assert page.locator("h1").inner_text() == SHOWN_NAME
    wait_until(page, "document.querySelector('.series-card img').complete")
    screenshot(page, "xss-study-page")
    assert_no_markup_ran(page)

    # Viewer: series bar, head and the images, all under the policy.
    response = open_viewer(page, study)
    assert_csp_header(response)
    assert page.locator("#series-bar .series-description").inner_text() == SERIES_MARKUP
    assert page.locator("#patient-name").inner_text() == SHOWN_NAME
    left, right = page.evaluate(CHAR_X, [".viewer-head", "2026-01-02"])
    assert left < right, "the U+202E in the patient name reversed the study date next to it"
    assert page.evaluate("window.radloopViewer.error") is None
    assert page.title().startswith("Viewer · ")
    screenshot(page, "xss-viewer")
    assert_no_markup_ran(page)
    assert csp_violations(page) == []


def test_the_viewer_decodes_jpeg_2000_under_the_csp(watched, live_server, cast, monkeypatch):
    """Compressed frames are decoded by Cornerstone's WebAssembly codecs (in its web worker): the policy
    must leave them working, with no violation reported."""
    page = watched
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    _, token = ApiToken.issue(cast.admin, "pacs")
    slices = hostile_slices(6, study="j2k-study", patient_id="J2K-1", transfer_syntax=JPEG2000Lossless)
    assert stow(live_server.url, token, slices) == 200
    study = Study.objects.get(patient_id="J2K-1")
    assert {i.transfer_syntax_uid for i in study.series.get().instances.all()} == {JPEG2000Lossless}  # stored as sent

    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, study)
    # The decoded pixels: slice k of the factory holds a square of 40 + k HU in air (-1000 HU).
    hu = page.evaluate("""() => { const v = window.radloopViewer, g = v.geometry();
      return [v.huAt(g.indexToWorld([32, 32, 2])), v.huAt(g.indexToWorld([2, 2, 2]))]; }""")
    assert hu == [42, -1000]
    screenshot(page, "xss-viewer-j2k")
    assert page.evaluate("window.radloopViewer.error") is None
    assert_no_markup_ran(page)
    assert csp_violations(page) == []


def test_the_viewer_shows_the_series_geometry_warnings_as_text(watched, live_server, cast, monkeypatch):
    page = watched
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    _, token = ApiToken.issue(cast.admin, "pacs")
    assert stow(live_server.url, token, hostile_slices(4, study="geo-study", patient_id="GEO-1")) == 200
    series = Study.objects.get(patient_id="GEO-1").series.get()
    # What prepare_series records for a flagged series (one sentence per problem).
    series.geometry_warnings = ["Slices belong to 2 frames of reference.", f"Pixel spacing is missing {SERIES_MARKUP}."]
    series.save(update_fields=["geometry_warnings"])

    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, series.study)

    strip = page.locator("#geometry-warning")
    assert strip.is_visible()
    assert strip.inner_text() == (f"Geometry: Slices belong to 2 frames of reference. · Pixel spacing is missing {SERIES_MARKUP}.")
    assert page.locator("#series-bar .series-item .series-warning").inner_text() == "⚠ geometry"
    screenshot(page, "xss-viewer-geometry-warning")
    assert_no_markup_ran(page)
    assert csp_violations(page) == []

    series.geometry_warnings = []
    series.save(update_fields=["geometry_warnings"])
    open_viewer(page, series.study)
    assert not page.locator("#geometry-warning").is_visible()
    assert page.locator("#series-bar .series-warning").count() == 0


def test_the_django_admin_works_under_the_csp(watched, cast):
    """The admin's own scripts are files; django-celery-beat's inline one is replaced by
    static/js/periodictask_admin.js (webapp/templates/admin/djcelery/)."""
    from django_celery_beat.models import CrontabSchedule

    page = watched
    cast.admin.is_staff = cast.admin.is_superuser = True
    cast.admin.save()
    crontab = CrontabSchedule.objects.create(minute="30", hour="2")
    log_in(page, cast.admin.username, PASSWORD)

    response = page.goto("/django-admin/")
    assert_csp_header(response)
    page.goto("/django-admin/auth/user/")
    page.locator("#result_list").wait_for()
    page.goto("/django-admin/django_celery_beat/periodictask/add/")
    page.select_option("#id_crontab", str(crontab.pk))
    help_text = page.locator(".field-crontab .help").inner_text()
    assert "Translation: At 02:30" in help_text, help_text
    assert not page.locator(".field-crontab_translation").is_visible()
    screenshot(page, "csp-admin-periodic-task")
    assert_no_markup_ran(page)
    assert csp_violations(page) == []


def test_a_length_measurement_is_labelled_under_the_csp(watched, live_server, cast, monkeypatch):
    """Cornerstone's measurement labels are SVG text styled through the style attribute, which a strict
    policy refuses unless the viewer sets it through CSSOM (frontend/src/csp.js)."""
    page = watched
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    _, token = ApiToken.issue(cast.admin, "pacs")
    assert stow(live_server.url, token, hostile_slices(4, study="len-study", patient_id="LEN-1")) == 200
    log_in(page, cast.radiologist.username, PASSWORD)
    open_viewer(page, Study.objects.get(patient_id="LEN-1"))

    page.keyboard.press("l")
    box = page.locator("#vp-axial .vp-el").bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + box["width"] * 0.3, y, steps=6)
    page.mouse.up()
    wait_until(page, "[...document.querySelectorAll('#vp-axial svg text')].some((t) => t.textContent.includes('mm'))", 10)
    label = page.locator("#vp-axial svg text", has_text="mm").first
    assert label.evaluate("t => t.style.filter").startswith("url(")  # Cornerstone's drop shadow is applied
    screenshot(page, "csp-viewer-length")
    assert_no_markup_ran(page)
    assert csp_violations(page) == []
