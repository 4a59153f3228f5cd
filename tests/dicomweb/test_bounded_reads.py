"""Unbounded reads are bounded: QIDO pages, wildcard matching, frame lists, rendered sizes; and
errors under /dicomweb/ are JSON (500s and CSRF failures included), patient data privately cached."""
from __future__ import annotations

import io

import pytest
from django.test import Client
from PIL import Image

from tests.factories import ct_slice, to_bytes
from webapp.accounts.models import ApiToken
from webapp.archive import services
from webapp.archive.models import Instance, Study
from webapp.dicomweb.qido import like_pattern

pytestmark = pytest.mark.django_db
BOUNDARY = "RadLoopTestBoundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def store(name: str, patient_name: str = "Doe^Jane", n: int = 1, **kw) -> Instance:
    batch = services.start_batch(None, "command")
    for i in range(n):
        ds = ct_slice(study=name, series=f"{name}-s", index=i, rows=16, columns=16, patient_id=f"P-{name}",
                      patient_name=patient_name, **kw)
        outcome = services.ingest_stream(batch, f"{name}-{i}.dcm", io.BytesIO(to_bytes(ds)))
        assert outcome.outcome == "stored", outcome.reason
    return Instance.objects.select_related("series__study").filter(series__series_uid=ct_slice(series=f"{name}-s").SeriesInstanceUID).order_by("instance_number").first()


def url_of(inst: Instance, suffix: str = "") -> str:
    s = inst.series
    return f"/dicomweb/studies/{s.study.study_uid}/series/{s.series_uid}/instances/{inst.sop_uid}{suffix}"


@pytest.fixture
def reader(cast):
    client = Client(raise_request_exception=False)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {ApiToken.issue(cast.radiologist, 'reader')[1]}"
    return client


def names(response) -> list[str]:
    if response.status_code == 204:
        return []
    return sorted(item["00100010"]["Value"][0]["Alphabetic"] for item in response.json())


# --- QIDO pages ---------------------------------------------------------------------------------


@pytest.fixture
def five_studies(cast):
    return [store(f"page-{i}", patient_name=f"Page^{i}") for i in range(5)]


def test_a_search_without_limit_gets_the_default_page_and_is_told_there_is_more(reader, five_studies, settings):
    settings.DICOMWEB_QIDO_DEFAULT_LIMIT, settings.DICOMWEB_QIDO_MAX_LIMIT = 2, 3

    response = reader.get("/dicomweb/studies")

    assert len(response.json()) == 2
    assert response["Warning"].startswith("299 ") and "exceeded the maximum supported" in response["Warning"]


def test_a_limit_over_the_maximum_is_clamped_with_a_warning(reader, five_studies, settings):
    settings.DICOMWEB_QIDO_DEFAULT_LIMIT, settings.DICOMWEB_QIDO_MAX_LIMIT = 2, 3

    clamped = reader.get("/dicomweb/studies", {"limit": "1000000"})
    next_page = reader.get("/dicomweb/studies", {"limit": "3", "offset": "3"})

    assert len(clamped.json()) == 3 and "Additional results can be requested" in clamped["Warning"]
    assert len(next_page.json()) == 2 and not next_page.has_header("Warning")
    assert set(names(clamped)) | set(names(next_page)) == {f"Page^{i}" for i in range(5)}


def test_a_limit_the_client_chose_is_no_warning(reader, five_studies):
    response = reader.get("/dicomweb/studies", {"limit": "2"})

    assert len(response.json()) == 2 and not response.has_header("Warning")


@pytest.mark.parametrize("offset", ["5", "999999999999999999"])
def test_an_offset_past_the_end_is_an_empty_answer(reader, five_studies, offset):
    assert reader.get("/dicomweb/studies", {"offset": offset}).status_code == 204


@pytest.mark.parametrize("query", [{"limit": "9" * 40}, {"offset": "1e9"}, {"limit": " "}])
def test_absurd_paging_numbers_are_400(reader, five_studies, query):
    response = reader.get("/dicomweb/studies", query)

    assert response.status_code == 400 and response.json()["error"]


# --- wildcard matching ----------------------------------------------------------------------------


@pytest.fixture
def patients(cast):
    for name, patient in [("a", "Smith^Ann"), ("b", "Sm%th^Bob"), ("c", "Smith_Cid"), ("d", "Smithson^Dan"),
                          ("e", "Back")]:
        store(name, patient_name=patient)
    Study.objects.filter(patient_name="Back").update(patient_name="Back\\slash")  # a row as an older version stored it


@pytest.mark.parametrize("pattern, expected", [
    ("Smith*", ["Smith^Ann", "Smith_Cid", "Smithson^Dan"]),
    ("Sm%th*", ["Sm%th^Bob"]),  # % is a literal, not SQL's wildcard
    ("Smith_*", ["Smith_Cid"]),  # _ is a literal, not SQL's one-character wildcard
    ("S?ith^A*", ["Smith^Ann"]),
    ("****Ann", ["Smith^Ann"]),  # runs of * are one *
    ("smith^ann", ["Smith^Ann"]),  # names match case-insensitively
    ("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", []),  # backtracking pattern: just no match
    ("Back\\*", ["Back\\slash"]),  # a backslash is a literal character, never SQL's escape
    ("Back\\", []),
])
def test_wildcards_become_escaped_sql_like(reader, patients, pattern, expected):
    response = reader.get("/dicomweb/studies", {"PatientName": pattern})

    assert response.status_code in (200, 204)
    assert names(response) == expected


def test_like_patterns_escape_sql_wildcards():
    assert like_pattern("a%b_c\\d*?**") == "a\\%b\\_c\\\\d%_%"


def test_a_too_long_pattern_is_400(reader, patients):
    response = reader.get("/dicomweb/studies", {"PatientName": "*" + "a" * 400})

    assert response.status_code == 400 and "at most" in response.json()["error"]


# --- frame lists ------------------------------------------------------------------------------------


@pytest.fixture
def instance(cast):
    return store("frames", n=1)


def test_frame_lists_are_capped(reader, instance, settings):
    settings.DICOMWEB_MAX_FRAMES_PER_REQUEST = 3

    response = reader.get(url_of(instance, "/frames/1,1,1,1"))

    assert response.status_code == 400 and "at most 3 frames" in response.json()["error"]


def test_a_frame_asked_for_twice_is_400(reader, instance):
    response = reader.get(url_of(instance, "/frames/1,1"))

    assert response.status_code == 400 and "duplicates" in response.json()["error"]


def test_a_frame_the_instance_does_not_have_is_404(reader, instance):
    response = reader.get(url_of(instance, "/frames/2"))

    assert response.status_code == 404 and "does not exist" in response.json()["error"]


def test_a_huge_frame_list_is_refused_before_it_is_parsed(reader, instance):
    response = reader.get(url_of(instance, "/frames/" + ",".join(["1"] * 5000)))

    assert response.status_code == 400


# --- rendered sizes ---------------------------------------------------------------------------------


@pytest.fixture
def wide_pixels(cast):
    """16 x 16 pixels of 0.35 mm rows and 0.7 mm columns: twice as wide as tall on screen."""
    return store("wide", n=1, spacing_mm=(0.35, 0.7))


def test_a_giant_viewport_is_capped_and_keeps_the_aspect(reader, wide_pixels):
    response = reader.get(url_of(wide_pixels, "/rendered"), {"viewport": "100000,100000"}, HTTP_ACCEPT="image/png")

    assert response.status_code == 200
    width, height = Image.open(io.BytesIO(response.content)).size
    assert (width, height) == (2048, 1024)


def test_rendered_without_viewport_keeps_its_size_and_aspect(reader, wide_pixels):
    response = reader.get(url_of(wide_pixels, "/rendered"), HTTP_ACCEPT="image/png")

    assert Image.open(io.BytesIO(response.content)).size == (16, 8)


@pytest.mark.parametrize("viewport", ["1" * 30 + ",10", "10", "10,10,10", "-5,10", "0,10"])
def test_bad_viewports_are_400(reader, wide_pixels, viewport):
    response = reader.get(url_of(wide_pixels, "/rendered"), {"viewport": viewport})

    assert response.status_code == 400 and "viewport" in response.json()["error"]


# --- JSON errors and caching ------------------------------------------------------------------------


def test_a_server_error_under_dicomweb_is_json_without_detail(reader, instance, settings):
    settings.DICOMWEB_QIDO_DEFAULT_LIMIT = "not a number"  # a misconfigured server: the search raises

    response = reader.get("/dicomweb/studies")

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "internal server error; the incident was logged", "status": 500}


def test_a_csrf_failure_under_dicomweb_is_json_and_elsewhere_django_s_page(cast):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast.admin)

    stow = browser.post("/dicomweb/studies", b"--x--", content_type=STOW_TYPE)
    login = browser.post("/login/", {"username": "x", "password": "y"})

    assert stow.status_code == 403 and "CSRF" in stow.json()["error"]
    assert login.status_code == 403 and login["Content-Type"].startswith("text/html")
    assert Study.objects.count() == 0


def test_patient_data_from_dicomweb_is_never_publicly_cached(reader, instance):
    s = instance.series
    for url in ("/dicomweb/studies", f"/dicomweb/studies/{s.study.study_uid}/series/{s.series_uid}/metadata",
                url_of(instance, "/frames/1"), url_of(instance, "/rendered"), url_of(instance, "/metadata"),
                url_of(instance, "/frames/9")):
        response = reader.get(url)
        assert response["Cache-Control"].startswith("private"), url
        assert "public" not in response["Cache-Control"], url


def test_a_wrong_method_under_dicomweb_is_json_405(reader, instance):
    for url in ("/dicomweb/studies", url_of(instance, "/metadata")):
        response = reader.delete(url)

        assert response.status_code == 405, url
        assert "not allowed" in response.json()["error"] and response["Allow"], url
