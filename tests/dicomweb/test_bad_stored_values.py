"""The read side never breaks on stored data.

Each case stores a valid study through the ingest service, then rewrites one stored file and/or
its database row to a hostile value, bypassing ingest (as data stored by an older version, or a
future edge case, would be). Every read endpoint must then answer something other than a 500,
with valid JSON where JSON is sent, and every other study must still list and serve.
"""
from __future__ import annotations

import io
import json
import math
import struct

import pydicom
import pytest
from django.test import Client
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.factories import ct_slice, to_bytes
from webapp.accounts.models import ApiToken
from webapp.archive import services
from webapp.archive.models import Instance, Series
from webapp.archive.storage import archive_storage

pytestmark = pytest.mark.django_db
OHIF_STUDY_LIST = {"limit": "101", "offset": "0", "fuzzymatching": "false", "includefield": "00081030,00080060"}
DEFLATED = "1.2.840.10008.1.2.1.99"


# --- making hostile stored data -------------------------------------------------------------------


def store_study(name: str, n: int = 3, **kw) -> Series:
    batch = services.start_batch(None, "command")
    for i in range(n):
        ds = ct_slice(study=name, series=f"{name}-ct", index=i, rows=16, columns=16, patient_id=f"P-{name}",
                      patient_name=f"Test^{name}", **kw)
        outcome = services.ingest_stream(batch, f"{name}-{i}.dcm", io.BytesIO(to_bytes(ds)))
        assert outcome.outcome == "stored", outcome.reason
    return Series.objects.select_related("study").get(series_uid=ct_slice(series=f"{name}-ct").SeriesInstanceUID)


def splice(data: bytes, tag: int, vr: str, value: bytes) -> tuple[bytes, int]:
    """Replace one top-level explicit-VR element's value in a file's bytes; (new bytes, size change)."""
    if len(value) % 2:
        value += b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    at = data.find(head, 132)
    assert at > 0, f"{tag:08X} not in file"
    (old,) = struct.unpack("<H", data[at + 6 : at + 8])
    return data[: at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + old :], len(value) - old


def corrupt(inst: Instance, tag: int, vr: str, value: bytes) -> None:
    """Write a hostile raw value into the stored file of ``inst`` (its row's offsets follow)."""
    path = archive_storage().path(inst.file_path)
    with open(path, "rb") as f:
        data, delta = splice(f.read(), tag, vr, value)
    with open(path, "wb") as f:
        f.write(data)
    Instance.objects.filter(pk=inst.pk).update(
        file_size=len(data), pixel_data_offset=inst.pixel_data_offset + delta if inst.pixel_data_offset else None)


def rewrite(inst: Instance, ds: pydicom.Dataset, **row) -> None:
    """Replace the stored file of ``inst`` by ``ds`` (e.g. deflated), and update its row."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    with open(archive_storage().path(inst.file_path), "wb") as f:
        f.write(buf.getvalue())
    Instance.objects.filter(pk=inst.pk).update(file_size=len(buf.getvalue()), **row)


def stored_dataset(inst: Instance) -> pydicom.Dataset:
    return pydicom.dcmread(archive_storage().path(inst.file_path))


def first(series: Series) -> Instance:
    return series.instances.select_related("series__study").order_by("instance_number").first()


# The hostile cases: each takes a stored series and makes it bad. Names say what was stored.

def number_of_frames_abc(series):
    for inst in series.instances.all():
        ds = stored_dataset(inst)
        if "NumberOfFrames" not in ds:
            ds.NumberOfFrames = 1
            rewrite(inst, ds)
            _refresh_offset(inst)
        corrupt(Instance.objects.get(pk=inst.pk), 0x00280008, "IS", b"abc")


def pixel_spacing_with_comma(series):
    for inst in series.instances.all():
        corrupt(inst, 0x00280030, "DS", b"0,5\\0,5")


def nan_positions(series):
    for inst in series.instances.all():
        corrupt(inst, 0x00200032, "DS", b"NaN\\inf\\-inf")
    Instance.objects.filter(series=series).update(position_x_mm=math.nan, position_z_mm=math.inf)
    Series.objects.filter(pk=series.pk).update(pixel_spacing_row_mm=math.nan, image_orientation=["a", None])


def rescale_slope_abc(series):
    for inst in series.instances.all():
        corrupt(inst, 0x00281053, "DS", b"abc")


def deflated_legacy_file(series):
    """Stored by an older version as deflated (it is readable, only slowly and with a cap)."""
    for inst in series.instances.all():
        ds = stored_dataset(inst)
        ds.file_meta.TransferSyntaxUID = DEFLATED
        rewrite(inst, ds, transfer_syntax_uid=DEFLATED, pixel_data_offset=None, pixel_data_length=None)


def deflate_bomb(series):
    """A deflated file whose header inflates to 40 MB (a private element of zeros): past the cap."""
    for inst in series.instances.all():
        ds = stored_dataset(inst)
        ds.add_new(0x00091010, "LO", "RADLOOP")  # private creator
        ds.add_new(0x00091000 | 0x1001, "OB", b"\0" * (40 * 2**20))
        ds.file_meta.TransferSyntaxUID = DEFLATED
        rewrite(inst, ds, transfer_syntax_uid=DEFLATED, pixel_data_offset=None, pixel_data_length=None)


def file_missing(series):
    for inst in series.instances.all():
        archive_storage().delete(inst.file_path)


def file_truncated(series):
    for inst in series.instances.all():
        path = archive_storage().path(inst.file_path)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) - 300])


def not_dicom_at_all(series):
    for inst in series.instances.all():
        with open(archive_storage().path(inst.file_path), "wb") as f:
            f.write(b"MZ\x90\x00 this is not a DICOM file" * 10)


def sequence_of_100000_items(series):
    inst = first(series)
    ds = stored_dataset(inst)
    items = []
    for i in range(100_000):
        item = Dataset()
        item.ReferencedSOPInstanceUID = f"1.2.3.{i}"
        items.append(item)
    ds.ReferencedImageSequence = Sequence(items)
    rewrite(inst, ds)
    _refresh_offset(Instance.objects.get(pk=inst.pk))


def rows_and_json_junk(series):
    """Database rows as a buggy migration could leave them."""
    Series.objects.filter(pk=series.pk).update(image_orientation={"not": "a list"}, pixel_spacing_col_mm=-math.inf,
                                              thumbnail="thumbnails/gone.png")
    Instance.objects.filter(series=series).update(image_orientation="junk", slice_location_mm=math.nan)


def _refresh_offset(inst: Instance) -> None:
    """After rewriting a native file, point the row at its pixel data again."""
    path = archive_storage().path(inst.file_path)
    with open(path, "rb") as f:
        data = f.read()
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    (length,) = struct.unpack("<I", data[at + 8 : at + 12])
    Instance.objects.filter(pk=inst.pk).update(pixel_data_offset=at + 12, pixel_data_length=length, file_size=len(data))


CASES = [number_of_frames_abc, pixel_spacing_with_comma, nan_positions, rescale_slope_abc, deflated_legacy_file,
         deflate_bomb, file_missing, file_truncated, not_dicom_at_all, sequence_of_100000_items, rows_and_json_junk]


# --- what a client sees ---------------------------------------------------------------------------


def strict_json(response):
    """JSON as a browser's JSON.parse reads it: NaN / Infinity are errors."""
    def refuse(name):
        raise AssertionError(f"{name} in JSON from {response.wsgi_request.path}")

    return json.loads(response.content, parse_constant=refuse)


@pytest.fixture
def reader(cast):
    client = Client(raise_request_exception=False)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {ApiToken.issue(cast.radiologist, 'reader')[1]}"
    return client


@pytest.fixture
def archive(cast):
    """Three good studies and one that the test makes bad."""
    good = [store_study(f"good-{i}") for i in range(3)]
    bad = store_study("bad", spacing_mm=(0.7, 0.7))
    return good, bad


def urls_of(series: Series) -> dict[str, str]:
    inst = first(series)
    s = f"/dicomweb/studies/{series.study.study_uid}/series/{series.series_uid}"
    i = f"{s}/instances/{inst.sop_uid}"
    return {
        "series metadata": f"{s}/metadata",
        "study metadata": f"/dicomweb/studies/{series.study.study_uid}/metadata",
        "instance metadata": f"{i}/metadata",
        "series search": f"/dicomweb/studies/{series.study.study_uid}/series?includefield=all",
        "instance search": f"{s}/instances?includefield=00280030,00200032,00280008,00081140",
        "frames": f"{i}/frames/1",
        "rendered": f"{i}/rendered",
        "frame rendered": f"{i}/frames/1/rendered",
        "instance thumbnail": f"{i}/thumbnail",
        "series thumbnail": f"{s}/thumbnail",
        "study thumbnail": f"/dicomweb/studies/{series.study.study_uid}/thumbnail",
        "bulkdata": f"{i}/bulkdata/7FE00010",
        "retrieve instance": f"{i}",
    }


@pytest.mark.parametrize("make_bad", CASES, ids=lambda f: f.__name__)
def test_a_bad_study_never_breaks_the_study_list(reader, archive, make_bad):
    good, bad = archive
    make_bad(bad)

    for params in (OHIF_STUDY_LIST, {"includefield": "all"}, {"includefield": "00280030,00200032,00280008"}, {}):
        response = reader.get("/dicomweb/studies", params)
        assert response.status_code == 200, (params, response.content[:300])
        listed = {item["0020000D"]["Value"][0] for item in strict_json(response)}
        assert listed == {s.study.study_uid for s in (*good, bad)}, params


@pytest.mark.parametrize("make_bad", CASES, ids=lambda f: f.__name__)
def test_no_read_of_a_bad_series_answers_500_and_good_series_still_serve(reader, archive, make_bad):
    good, bad = archive
    make_bad(bad)

    for what, url in urls_of(bad).items():
        response = reader.get(url)
        assert response.status_code != 500, (what, response.content[:300])
        assert response.status_code in (200, 204, 404, 422), (what, response.status_code)
        if response["Content-Type"].startswith(("application/json", "application/dicom+json")):
            body = strict_json(response)
            if response.status_code >= 400:
                assert body["error"], what
    for what, url in urls_of(good[0]).items():
        assert reader.get(url).status_code == 200, what


def test_unconvertible_values_are_sent_without_value_and_the_rest_is_kept(reader, archive):
    _, bad = archive
    number_of_frames_abc(bad)
    pixel_spacing_with_comma(bad)

    items = strict_json(reader.get(urls_of(bad)["series metadata"]))

    assert len(items) == 3
    for item in items:
        assert item["00280008"] == {"vr": "IS"}  # NumberOfFrames 'abc': no Value
        assert item["00100020"]["Value"] == ["P-bad"]  # everything else is there
        assert item["00280010"]["Value"] == [16]


def test_nan_positions_are_never_sent_as_nan(reader, archive):
    _, bad = archive
    nan_positions(bad)

    metadata = strict_json(reader.get(urls_of(bad)["series metadata"]))
    series = strict_json(reader.get(f"/dicomweb/studies/{bad.study.study_uid}/series",
                                    {"includefield": "00280030,00200037"}))
    instances = strict_json(reader.get(f"/dicomweb/studies/{bad.study.study_uid}/instances",
                                       {"includefield": "00200032"}))

    assert all(item["00200032"] == {"vr": "DS"} for item in metadata)
    assert series[0]["00280030"] == {"vr": "DS"} and series[0]["00200037"] == {"vr": "DS"}
    assert all(item["00200032"] == {"vr": "DS"} for item in instances)


def test_unreadable_pixels_are_a_422_with_the_reason(reader, archive):
    _, bad = archive
    rescale_slope_abc(bad)

    response = reader.get(urls_of(bad)["rendered"])

    assert response.status_code == 422
    assert "cannot be read" in response.json()["error"]


def test_a_deflate_bomb_is_never_inflated_past_the_cap(reader, archive):
    _, bad = archive
    deflate_bomb(bad)

    metadata = reader.get(urls_of(bad)["series metadata"])
    frames = reader.get(urls_of(bad)["frames"])

    assert metadata.status_code == 200  # described from the database rows
    assert strict_json(metadata)[0]["00080018"]["Value"] == [first(bad).sop_uid]
    assert frames.status_code == 422 and "cannot be read" in frames.json()["error"]


def test_a_deflated_legacy_file_is_still_served(reader, archive):
    _, bad = archive
    deflated_legacy_file(bad)

    metadata = strict_json(reader.get(urls_of(bad)["series metadata"]))
    frames = reader.get(urls_of(bad)["frames"])
    rendered = reader.get(urls_of(bad)["rendered"], HTTP_ACCEPT="image/png")

    assert metadata[0]["00100020"]["Value"] == ["P-bad"]
    assert frames.status_code == 200 and len(frames.content) > 16 * 16 * 2
    assert rendered.status_code == 200 and Image.open(io.BytesIO(rendered.content)).size == (16, 16)


def test_a_sequence_of_100000_items_is_left_out_of_metadata(reader, archive):
    _, bad = archive
    sequence_of_100000_items(bad)

    items = strict_json(reader.get(urls_of(bad)["series metadata"]))

    assert len(items) == 3
    assert all("00081140" not in item for item in items)
    assert all(item["00100020"]["Value"] == ["P-bad"] for item in items)


def test_the_case_browser_thumbnail_is_a_placeholder_not_a_500(cast, archive):
    _, bad = archive
    not_dicom_at_all(bad)
    browser = Client(raise_request_exception=False)
    browser.force_login(cast.radiologist)

    response = browser.get(f"/series/{bad.series_uid}/thumbnail.png")

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Thumbnail-Unavailable"]
    assert Image.open(io.BytesIO(response.content)).size == (192, 192)
