"""DICOMweb against the served app, with the real dicomweb-client package as the client."""
from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from webapp.archive.models import Instance

pytestmark = pytest.mark.django_db(transaction=True)


def uids(results, keyword):
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    return sorted(r[tag]["Value"][0] for r in results)


def patient_ids(results):
    return uids(results, "PatientID")


# --- QIDO-RS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({}, ["P-ANN", "P-BOB", "P-CID"]),
        ({"PatientID": "P-BOB"}, ["P-BOB"]),
        ({"PatientName": "Smith^A*"}, ["P-ANN"]),  # dicomweb-client URL-encodes ^ and *
        ({"PatientName": "*o?es*"}, ["P-BOB"]),
        ({"StudyDate": "20250201-20250331"}, ["P-BOB", "P-CID"]),
        ({"StudyDate": "-20250131"}, ["P-ANN"]),
        ({"AccessionNumber": "A300"}, ["P-CID"]),
        ({"ModalitiesInStudy": "MR"}, ["P-CID"]),
        ({"00100020": "P-ANN"}, ["P-ANN"]),  # a tag instead of a keyword
    ],
)
def test_search_for_studies_matches_each_key(reader_dw, stored, filters, expected):
    assert patient_ids(reader_dw.search_for_studies(search_filters=filters)) == expected


def test_study_search_returns_the_standard_default_attributes(reader_dw, stored, gunicorn_server):
    (study,) = reader_dw.search_for_studies(search_filters={"PatientID": "P-ANN"})

    for keyword in ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "RetrieveURL", "InstanceAvailability"):
        assert f"{pydicom.datadict.tag_for_keyword(keyword):08X}" in study, keyword
    ds = pydicom.Dataset.from_json(study)
    assert (ds.NumberOfStudyRelatedSeries, ds.NumberOfStudyRelatedInstances) == (1, 4)
    assert ds.ModalitiesInStudy == "CT" and str(ds.PatientName) == "Smith^Ann"
    assert ds.RetrieveURL == f"{gunicorn_server}/dicomweb/studies/{ds.StudyInstanceUID}"


def test_study_uid_lists_limit_offset_and_includefield(reader_dw, stored):
    ann, bob = stored["ann"][0].StudyInstanceUID, stored["bob"][0].StudyInstanceUID

    both = reader_dw.search_for_studies(search_filters={"StudyInstanceUID": f"{ann},{bob}"})
    page = reader_dw.search_for_studies(limit=1, offset=1)
    included = reader_dw.search_for_studies(search_filters={"PatientID": "P-ANN"}, fields=["StudyDescription", "00180050"])
    everything = reader_dw.search_for_studies(search_filters={"PatientID": "P-ANN"}, fields=["all"], fuzzymatching=True)

    assert patient_ids(both) == ["P-ANN", "P-BOB"]
    assert len(page) == 1
    assert included[0]["00081030"]["Value"] == ["CT CHEST"] and included[0]["00180050"]["Value"] == [2.5]
    assert everything[0]["00080070"]["Value"] == ["Test"]  # Manufacturer, from the stored headers


def test_series_and_instance_search(reader_dw, stored):
    ann = stored["ann"]
    study_uid = ann[0].StudyInstanceUID

    series = reader_dw.search_for_series(study_instance_uid=study_uid)
    all_mr = reader_dw.search_for_series(search_filters={"Modality": "MR"})
    instances = reader_dw.search_for_instances(study_instance_uid=study_uid, series_instance_uid=ann[0].SeriesInstanceUID)
    one = reader_dw.search_for_instances(search_filters={"SOPInstanceUID": ann[2].SOPInstanceUID})
    none = reader_dw.search_for_studies(search_filters={"PatientID": "NOBODY"})

    s = pydicom.Dataset.from_json(series[0])
    assert (s.Modality, s.SeriesNumber, s.NumberOfSeriesRelatedInstances) == ("CT", 1, 4)
    assert len(all_mr) == 1 and pydicom.Dataset.from_json(all_mr[0]).SeriesInstanceUID == stored["mr"][0].SeriesInstanceUID
    assert uids(instances, "SOPInstanceUID") == sorted(d.SOPInstanceUID for d in ann)
    i = pydicom.Dataset.from_json(one[0])
    assert (i.InstanceNumber, i.Rows, i.Columns, i.BitsAllocated, i.NumberOfFrames) == (3, 32, 32, 16, 1)
    assert none == []  # 204 No Content


# --- WADO-RS ------------------------------------------------------------------------------------


def test_series_metadata_equals_pydicoms_own_json_of_the_stored_files(reader_dw, stored, tmp_path):
    ann = stored["ann"]

    items = reader_dw.retrieve_series_metadata(ann[0].StudyInstanceUID, ann[0].SeriesInstanceUID)

    assert len(items) == 4
    by_uid = {i["00080018"]["Value"][0]: i for i in items}
    for inst in Instance.objects.filter(series__series_uid=ann[0].SeriesInstanceUID):
        stored_ds = pydicom.dcmread(tmp_path / "archive" / inst.file_path)
        expected = stored_ds.to_json_dict()
        expected.pop("7FE00010")
        got = dict(by_uid[inst.sop_uid])
        assert got.pop("00020010")["Value"] == ["1.2.840.10008.1.2.1"]
        assert "BulkDataURI" in got.pop("7FE00010")
        assert got == expected
    # slices come sorted along the normal, ready for a stack viewer
    z = [i["00200032"]["Value"][2] for i in items]
    assert z == sorted(z)


def test_frames_are_the_stored_pixel_bytes(reader_dw, stored):
    ds = stored["ann"][1]

    (frame,) = reader_dw.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])

    assert frame == ds.PixelData


def test_compressed_frames_as_stored_or_decoded(admin_dw, reader_dw):
    source = pydicom.dcmread(get_testdata_file("693_J2KR.dcm"))  # J2K lossless 512×512 CT
    admin_dw.store_instances(datasets=[source])
    args = (source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID, [1])

    (as_stored,) = reader_dw.retrieve_instance_frames(*args, media_types=(("image/jp2", "1.2.840.10008.1.2.4.90"),))
    (decoded,) = reader_dw.retrieve_instance_frames(*args, media_types=(("application/octet-stream", "1.2.840.10008.1.2.1"),))

    assert as_stored == pydicom.encaps.get_frame(source.PixelData, 0, number_of_frames=1)
    assert np.array_equal(np.frombuffer(decoded, dtype=source.pixel_array.dtype).reshape(512, 512), source.pixel_array)


def test_instances_series_and_studies_come_back_as_stored(reader_dw, stored):
    ann = stored["ann"]

    one = reader_dw.retrieve_instance(ann[0].StudyInstanceUID, ann[0].SeriesInstanceUID, ann[0].SOPInstanceUID)
    series = reader_dw.retrieve_series(ann[0].StudyInstanceUID, ann[0].SeriesInstanceUID)
    study = reader_dw.retrieve_study(stored["bob"][0].StudyInstanceUID)

    assert one.SOPInstanceUID == ann[0].SOPInstanceUID and one.PixelData == ann[0].PixelData
    assert sorted(d.SOPInstanceUID for d in series) == sorted(d.SOPInstanceUID for d in ann)
    assert len(study) == 3


def test_rendered_images_with_window_and_viewport(reader_dw, stored):
    ds = stored["ann"][0]
    ids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    jpeg = reader_dw.retrieve_instance_rendered(*ids, media_types=("image/jpeg",))
    png = reader_dw.retrieve_instance_frames_rendered(*ids, [1], media_types=("image/png",), params={"window": "40,400", "viewport": "64,64"})
    lung = reader_dw.retrieve_instance_frames_rendered(*ids, [1], media_types=("image/png",), params={"window": "-600,1500", "viewport": "64,64"})

    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    img = np.asarray(Image.open(io.BytesIO(png)))
    assert img.shape == (64, 64)
    assert img[0, 0] == 0 and img[32, 32] > 100  # air black, the soft-tissue square bright
    assert np.asarray(Image.open(io.BytesIO(lung)))[0, 0] > 0  # the lung window shows air as dark grey


def test_store_reports_referenced_and_failed_instances(admin_dw, stored):
    good = stored["ann"][0]  # already stored: stored again, harmlessly
    other = pydicom.dcmread(get_testdata_file("CT_small.dcm"))

    result = admin_dw.store_instances(datasets=[good, other])

    refs = [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence]
    assert refs == [good.SOPInstanceUID, other.SOPInstanceUID]
    assert "FailedSOPSequence" not in result
    assert Instance.objects.filter(sop_uid=other.SOPInstanceUID).exists()


def test_stow_with_chunked_transfer_encoding(gunicorn_server, tokens):
    import requests

    from tests.factories import to_bytes

    boundary = "ChunkyBoundary"
    datasets = [ct_slice_big(i) for i in range(3)]

    def body():  # a generator: requests sends it with Transfer-Encoding: chunked
        for ds in datasets:
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            data = to_bytes(ds)
            for start in range(0, len(data), 65536):
                yield data[start : start + 65536]
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    response = requests.post(
        f"{gunicorn_server}/dicomweb/studies",
        data=body(),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                 "Authorization": f"Bearer {tokens['admin']}"},
        timeout=60,
    )

    assert response.status_code == 200, response.text
    assert len(response.json()["00081199"]["Value"]) == 3
    assert Instance.objects.filter(series__series_uid=datasets[0].SeriesInstanceUID).count() == 3


def ct_slice_big(index):
    from tests.factories import ct_slice

    return ct_slice(index=index, rows=512, columns=512, study="chunked", series="chunked-se", patient_id="CHUNK")
