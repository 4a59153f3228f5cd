"""Who may call DICOMweb, and what bad requests get back (through Django's full HTTP stack)."""
from __future__ import annotations

import io

import pydicom
import pytest
from django.test import Client

from tests.factories import ct_slice, to_bytes
from webapp.accounts.models import ApiToken, AuditEvent
from webapp.archive import services
from webapp.archive.models import Instance, Study

pytestmark = pytest.mark.django_db
BOUNDARY = "RadLoopTestBoundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def multipart(*parts: bytes, part_type: str = "application/dicom") -> bytes:
    body = b"".join(f"--{BOUNDARY}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts)
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def series(cast):
    batch = services.start_batch(cast.admin)
    for i in range(3):
        services.ingest_stream(batch, "x", io.BytesIO(to_bytes(ct_slice(index=i, rows=16, columns=16))))
    inst = Instance.objects.select_related("series__study").order_by("instance_number").first()
    return inst


def url_of(inst, suffix=""):
    s = inst.series
    return f"/dicomweb/studies/{s.study.study_uid}/series/{s.series_uid}/instances/{inst.sop_uid}{suffix}"


def bearer(user, name="t"):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, name)[1]}"}


# --- authentication and roles ------------------------------------------------------------------


def test_anonymous_requests_get_401_not_a_login_redirect(client, series):
    for url in ("/dicomweb/studies", url_of(series, "/metadata"), url_of(series, "/frames/1")):
        response = client.get(url)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert client.post("/dicomweb/studies", multipart(to_bytes(ct_slice())), content_type=STOW_TYPE).status_code == 401
    assert Study.objects.count() == 1


def test_a_bad_or_revoked_token_is_401(client, cast, series):
    from webapp.accounts.services import revoke_token

    token, key = ApiToken.issue(cast.radiologist, "old")
    assert client.get("/dicomweb/studies", HTTP_AUTHORIZATION=f"Bearer {key}").status_code in (200, 204)
    revoke_token(token)

    assert client.get("/dicomweb/studies", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 401
    assert client.get("/dicomweb/studies", HTTP_AUTHORIZATION="Bearer rlt_nonsense").status_code == 401
    assert client.get("/dicomweb/studies", HTTP_AUTHORIZATION="Basic YWRtaW46YWRtaW4=").status_code == 401


def test_a_radiologist_reads_but_cannot_store(client, cast, series):
    headers = bearer(cast.radiologist)

    assert client.get("/dicomweb/studies", **headers).status_code == 200
    response = client.post("/dicomweb/studies", multipart(to_bytes(ct_slice(study="new"))), content_type=STOW_TYPE, **headers)

    assert response.status_code == 403 and "store" in response.json()["error"]
    assert Study.objects.count() == 1


def test_an_uploader_token_stores_but_cannot_read(client, cast, series):
    from webapp.accounts.services import ensure_user

    pacs, _ = ensure_user("pacs", "unused-password-123", "uploader")
    headers = bearer(pacs)

    stored = client.post("/dicomweb/studies", multipart(to_bytes(ct_slice(study="pacs", series="pacs-series"))), content_type=STOW_TYPE, **headers)
    read = client.get("/dicomweb/studies", **headers)

    assert stored.status_code == 200 and read.status_code == 403
    assert Study.objects.count() == 2


def test_outsiders_are_refused_everything(client, cast, series):
    headers = bearer(cast.outsider)

    assert client.get("/dicomweb/studies", **headers).status_code == 403
    assert client.get(url_of(series, "/frames/1"), **headers).status_code == 403


def test_a_browser_session_works_and_keeps_csrf_protection(cast, series):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(cast.admin)

    assert browser.get("/dicomweb/studies").status_code == 200
    no_csrf = browser.post("/dicomweb/studies", multipart(to_bytes(ct_slice(study="s2"))), content_type=STOW_TYPE)
    assert no_csrf.status_code == 403
    assert Study.objects.count() == 1


def test_reads_are_audited_once_per_study_and_kind(client, cast, series):
    from django.core.cache import cache

    cache.clear()
    headers = bearer(cast.radiologist)
    for _ in range(3):
        client.get(url_of(series, "/frames/1"), **headers)
    client.get("/dicomweb/studies", {"PatientID": "PAT-1"}, **headers)

    frames = AuditEvent.objects.filter(action="dicomweb.frames", actor=cast.radiologist)
    assert frames.count() == 1 and frames.get().object_id == series.series.study.study_uid
    assert AuditEvent.objects.get(action="dicomweb.search").details["query"] == "PatientID=PAT-1"


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames, status, message", [("0", 400, "does not exist"), ("4", 404, "does not exist"),
                                                     ("1,a", 400, "whole numbers"), ("-1", 400, "whole numbers")])
def test_bad_frame_numbers_are_400_and_missing_frames_404(client, cast, series, frames, status, message):
    response = client.get(url_of(series, f"/frames/{frames}"), **bearer(cast.radiologist))

    assert response.status_code == status and message in response.json()["error"]


@pytest.mark.parametrize("params", [{"window": "abc"}, {"window": "40,0"}, {"window": "40,400,cubic"}, {"viewport": "0,10"}, {"viewport": "a,b"}, {"quality": "101"}])
def test_bad_render_parameters_are_400(client, cast, series, params):
    assert client.get(url_of(series, "/rendered"), params, **bearer(cast.radiologist)).status_code == 400


@pytest.mark.parametrize("url", ["/dicomweb/studies/..%2F..%2Fetc/metadata", "/dicomweb/studies/1.2.abc/series", "/dicomweb/studies/1..2/thumbnail"])
def test_bad_uids_are_400(client, cast, url):
    response = client.get(url, **bearer(cast.radiologist))

    assert response.status_code in (400, 404)
    assert "error" in response.json()


def test_unknown_uids_are_404(client, cast, series):
    headers = bearer(cast.radiologist)
    s = series.series

    assert client.get(f"/dicomweb/studies/1.2.3/series/{s.series_uid}/metadata", **headers).status_code == 404
    assert client.get(f"/dicomweb/studies/{s.study.study_uid}/series/{s.series_uid}/instances/1.2.3/frames/1", **headers).status_code == 404


@pytest.mark.parametrize("query, message", [({"limit": "x"}, "limit"), ({"offset": "-1"}, "offset"), ({"StudyDate": "2025"}, "YYYYMMDD"), ({"NotAKeyword": "1"}, "unknown attribute"), ({"StudyInstanceUID": "1.2.x"}, "invalid")])
def test_bad_queries_are_400(client, cast, series, query, message):
    response = client.get("/dicomweb/studies", query, **bearer(cast.radiologist))

    assert response.status_code == 400 and message in response.json()["error"]


def test_an_unsupported_accept_is_406(client, cast, series):
    headers = bearer(cast.radiologist)

    frames = client.get(url_of(series, "/frames/1"), HTTP_ACCEPT='multipart/related; type="image/jp2"', **headers)
    rendered = client.get(url_of(series, "/rendered"), HTTP_ACCEPT="image/gif", **headers)
    instance = client.get(url_of(series), HTTP_ACCEPT='multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50', **headers)

    assert (frames.status_code, rendered.status_code, instance.status_code) == (406, 406, 406)
    assert "available" in frames.json()["error"]


@pytest.mark.parametrize(
    "content_type, body, status",
    [
        ("application/dicom", b"x", 415),
        ('multipart/related; type="application/dicom+json"; boundary=B', b"--B--", 415),
        ('multipart/related; type="application/dicom"', b"--B--", 400),
        (STOW_TYPE, b"\r\n", 400),
        (STOW_TYPE, b"no boundary in here", 400),
        (STOW_TYPE, f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nDICM-but-never-closed".encode(), 400),
    ],
)
def test_malformed_stow_requests_are_4xx_and_store_nothing(client, cast, content_type, body, status):
    response = client.post("/dicomweb/studies", body, content_type=content_type, **bearer(cast.admin))

    assert response.status_code == status, response.content
    assert Study.objects.count() == 0


def test_a_body_over_the_limit_is_413(client, cast, settings):
    settings.DICOMWEB_MAX_STOW_BYTES = 1000

    response = client.post("/dicomweb/studies", multipart(to_bytes(ct_slice())), content_type=STOW_TYPE, **bearer(cast.admin))

    assert response.status_code == 413 and Study.objects.count() == 0


def test_a_mix_of_good_and_bad_parts_is_202_with_reasons(client, cast, archive_dir):
    good = ct_slice(index=0)
    truncated = to_bytes(ct_slice(index=1))[:-100]
    wrong_study = ct_slice(index=2, study="another")

    response = client.post(
        f"/dicomweb/studies/{good.StudyInstanceUID}",
        multipart(to_bytes(good), b"not dicom at all", truncated, to_bytes(wrong_study)),
        content_type=STOW_TYPE, **bearer(cast.admin),
    )

    assert response.status_code == 202
    result = pydicom.Dataset.from_json(response.json())
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [good.SOPInstanceUID]
    failures = [(i.FailureReason, i.get("ReferencedSOPInstanceUID", "")) for i in result.FailedSOPSequence]
    assert failures == [(0xC000, ""), (0xC000, ""), (0xA900, wrong_study.SOPInstanceUID)]
    comments = response.json()["00081198"]["Value"]
    assert "not a DICOM file" in comments[0]["00000902"]["Value"][0]
    assert Instance.objects.count() == 1
    assert len([p for p in archive_dir.rglob("*.dcm") if ".incoming" not in p.parts]) == 1


def test_all_parts_failing_is_409(client, cast):
    response = client.post("/dicomweb/studies", multipart(b"junk"), content_type=STOW_TYPE, **bearer(cast.admin))

    assert response.status_code == 409


# --- speed features -----------------------------------------------------------------------------


def test_etags_and_cache_headers(client, cast, series):
    headers = bearer(cast.radiologist)

    first = client.get(url_of(series, "/frames/1"), **headers)
    again = client.get(url_of(series, "/frames/1"), HTTP_IF_NONE_MATCH=first["ETag"], **headers)
    meta = client.get(f"/dicomweb/studies/{series.series.study.study_uid}/series/{series.series.series_uid}/metadata", **headers)
    meta_again = client.get(meta.wsgi_request.path, HTTP_IF_NONE_MATCH=meta["ETag"], **headers)

    assert first.status_code == 200 and "immutable" in first["Cache-Control"] and first["ETag"].startswith('"')
    assert again.status_code == 304
    assert meta_again.status_code == 304


def test_json_is_gzipped_and_pixels_never_are(client, cast, series):
    headers = {**bearer(cast.radiologist), "HTTP_ACCEPT_ENCODING": "gzip, deflate"}
    s = series.series

    meta = client.get(f"/dicomweb/studies/{s.study.study_uid}/series/{s.series_uid}/metadata", **headers)
    frames = client.get(url_of(series, "/frames/1"), **headers)
    plain = client.get(f"/dicomweb/studies/{s.study.study_uid}/series/{s.series_uid}/metadata", **bearer(cast.radiologist))

    assert meta["Content-Encoding"] == "gzip"
    assert not frames.has_header("Content-Encoding")
    assert not plain.has_header("Content-Encoding") and len(plain.json()) == 3


def test_frames_answer_cornerstones_request_in_the_exact_format_it_parses(client, cast, series):
    response = client.get(
        url_of(series, "/frames/1"),
        HTTP_ACCEPT="multipart/related; type=application/octet-stream; transfer-syntax=*",
        **bearer(cast.radiologist),
    )

    content_type = response["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/octet-stream"; boundary=')
    boundary = content_type.rsplit("boundary=", 1)[1]
    head = f"--{boundary}\r\nContent-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\n\r\n".encode()
    assert response.content.startswith(head)
    assert response.content.endswith(f"\r\n--{boundary}--\r\n".encode())
    assert len(response.content) == len(head) + 16 * 16 * 2 + len(f"\r\n--{boundary}--\r\n")
