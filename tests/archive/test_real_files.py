"""Real DICOM files shipped in pydicom and pydicom-data: format coverage for the ingest path.

Only files known to ship offline are named: pydicom's get_testdata_file would otherwise try the
network for a missing name.
"""
from __future__ import annotations

import pytest
from pydicom.data import get_testdata_file

from webapp.archive import services
from webapp.archive.models import Instance, Series

pytestmark = pytest.mark.django_db

ACCEPTED = {
    "CT_small.dcm": ("1.2.840.10008.1.2.1", "CT"),  # explicit VR LE chest CT
    "explicit_VR-UN.dcm": ("1.2.840.10008.1.2.4.90", "CT"),  # 512×512 abdominal CT, J2K lossless
    "693_J2KR.dcm": ("1.2.840.10008.1.2.4.90", "CT"),
    "MR_small_implicit.dcm": ("1.2.840.10008.1.2", "MR"),
    "MR_small_bigendian.dcm": ("1.2.840.10008.1.2.2", "MR"),
    "MR_small_RLE.dcm": ("1.2.840.10008.1.2.5", "MR"),
    "MR_small_jpeg_ls_lossless.dcm": ("1.2.840.10008.1.2.4.80", "MR"),
    "JPEG-LL.dcm": ("1.2.840.10008.1.2.4.70", "NM"),  # JPEG lossless
    "JPEG2000.dcm": ("1.2.840.10008.1.2.4.91", "NM"),
    "SC_rgb_jpeg_dcmtk.dcm": ("1.2.840.10008.1.2.4.50", "OT"),  # JPEG baseline, colour
    "emri_small_jpeg_2k_lossless.dcm": ("1.2.840.10008.1.2.4.90", "MR"),  # multi-frame
}
REJECTED = {
    "MR_truncated.dcm": "file is truncated",
    "test-SR.dcm": "no pixel data",
    "rtstruct.dcm": "not a DICOM file",
    "bad_sequence.dcm": "invalid SOPInstanceUID",
    "JPEGLSNearLossless_08.dcm": "missing required UID StudyInstanceUID",
    "meta_missing_tsyntax.dcm": "missing TransferSyntaxUID",
}


@pytest.fixture
def batch(cast):
    return services.start_batch(cast.admin)


@pytest.mark.parametrize("name, expected", ACCEPTED.items())
def test_real_files_are_archived_as_they_came_and_render(batch, archive_dir, name, expected):
    path = get_testdata_file(name)

    (outcome,) = services.ingest_path(batch, path)

    assert outcome.outcome == "stored", outcome.reason
    instance = Instance.objects.get(sop_uid=outcome.sop_uid)
    assert (instance.transfer_syntax_uid, instance.series.modality) == expected
    with open(path, "rb") as original:
        stored = (archive_dir / instance.file_path).read_bytes()
        assert stored[128:] == original.read()[128:]  # kept as it came, but for the zeroed preamble
        assert stored[:128] == bytes(128)
    series = services.prepare_series(instance.series_id)  # decodes a frame for the thumbnail
    assert (archive_dir / series.thumbnail).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name, reason", REJECTED.items())
def test_broken_real_files_are_refused_with_the_reason(batch, archive_dir, name, reason):
    (outcome,) = services.ingest_path(batch, get_testdata_file(name))

    assert outcome.outcome == "rejected"
    assert reason in outcome.reason
    assert Series.objects.count() == 0


def test_a_real_multi_frame_file_keeps_its_frame_count(batch):
    services.ingest_path(batch, get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))

    assert Instance.objects.get().number_of_frames == 10
