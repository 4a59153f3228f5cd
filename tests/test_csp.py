"""Every page is served with a strict Content-Security-Policy, and no page needs it relaxed: no inline
script, no inline style, no event-handler attributes; scripts never turn data into markup."""
from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import reverse

from tests.factories import ct_slice, to_bytes
from webapp.archive import services
from webapp.archive.models import Study, UploadBatch

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}


class InlineCode(HTMLParser):
    """Collects what a strict policy would refuse: inline <script>, <style>, style= and on*= attributes."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script" and "src" not in names and names.get("type") != "application/json":
            self.found.append(f"inline <script> {attrs}")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name in {"href", "src", "action"} and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")


def inline_code(response) -> list[str]:
    parser = InlineCode()
    parser.feed(response.content.decode())
    return parser.found


def assert_strict(response):
    assert response.status_code == 200, response.status_code
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["style-src"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["form-action"] == ["'self'"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert inline_code(response) == []


@pytest.fixture
def study(cast, monkeypatch):
    monkeypatch.setattr("webapp.jobs.enqueue", lambda *a, **k: "not-sent")
    batch = services.start_batch(cast.admin)
    for i in range(3):
        services.ingest_stream(batch, f"IM{i}", io.BytesIO(to_bytes(ct_slice(index=i, SeriesDescription="<b>bold</b>"))))
    services.finish_batch(batch)
    return Study.objects.get()


def test_the_login_page_has_a_strict_policy(client, db):
    assert_strict(client.get(reverse("login")))


@pytest.mark.parametrize("path", ["/studies/", "/upload/", "/jobs/", "/models/", "/audit/", "/tokens/", "/quarantine/"])
def test_every_admin_page_has_a_strict_policy(admin_client, study, path):
    assert_strict(admin_client.get(path))


def test_the_study_page_and_the_viewer_have_a_strict_policy(radiologist_client, study):
    page = radiologist_client.get(reverse("archive:study_detail", args=[study.study_uid]))
    viewer = radiologist_client.get(f"/studies/{study.study_uid}/view/")

    assert_strict(page)
    assert_strict(viewer)
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.content.decode()  # the series description, as text
    # The viewer's data reaches its script as a JSON block, which the browser never runs.
    assert '<script id="viewer-config" type="application/json">' in viewer.content.decode()


def test_the_upload_result_page_has_a_strict_policy(admin_client, study):
    batch = UploadBatch.objects.get()
    assert_strict(admin_client.get(reverse("archive:upload_batch_detail", args=[batch.pk])))


@pytest.mark.parametrize("path", [
    "/django-admin/", "/django-admin/auth/user/", "/django-admin/auth/user/add/",
    "/django-admin/django_celery_beat/periodictask/", "/django-admin/django_celery_beat/periodictask/add/",
])
def test_the_django_admin_works_under_the_same_policy(client, cast, path):
    cast.admin.is_staff = cast.admin.is_superuser = True
    cast.admin.save()
    client.force_login(cast.admin)
    assert_strict(client.get(path))


def test_a_page_that_failed_still_has_the_policy(radiologist_client):
    response = radiologist_client.get("/studies/1.2.3.4.5/")

    assert response.status_code == 404
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_report_only_mode_sends_the_same_policy_under_the_report_only_header(client, db, settings):
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = True
    response = client.get(reverse("login"))

    assert "Content-Security-Policy" not in response
    assert response["Content-Security-Policy-Report-Only"].startswith("default-src 'self'; script-src 'self';")


def test_json_and_images_carry_no_policy(radiologist_client, study):
    """Only documents get the header (hundreds of frame and JSON requests per viewer do not need it)."""
    series = study.series.get()
    thumbnail = radiologist_client.get(reverse("archive:series_thumbnail", args=[series.series_uid]))
    review = radiologist_client.get(f"/api/review/studies/{study.study_uid}/")

    assert thumbnail.status_code == 200 and review.status_code == 200
    assert "Content-Security-Policy" not in thumbnail and "Content-Security-Policy" not in review
    assert review["X-Content-Type-Options"] == "nosniff"


def test_no_template_has_inline_script_or_style():
    templates = [p for d in ("webapp/templates", "webapp/viewer/templates") for p in (ROOT / d).rglob("*.html")]
    found = []
    for path in templates:
        text = path.read_text()
        for match in re.finditer(r"<script\b[^>]*>", text):
            if "src=" not in match.group(0):
                found.append(f"{path.name}: {match.group(0)}")
        found += [f"{path.name}: {m.group(0)}" for m in re.finditer(r"<style\b|\sstyle=|\son[a-z]+=", text)]
    assert len(templates) > 10 and found == []


def test_no_script_turns_a_string_into_markup():
    sources = [*(ROOT / "frontend" / "src").glob("*.js"), *(ROOT / "static" / "js").glob("*.js")]
    found = [f"{p.name}:{n}: {line.strip()}" for p in sources for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function", line)]
    assert len(sources) > 5 and found == []
