#!/usr/bin/env python3
"""STOW-RS of many small parts in one request: does the answer time grow linearly?

    .venv/bin/python bench/stow_parts.py [--parts 1000 10000] [--rows 8]

For each count, one multipart/related request of that many 8×8 CT slices (one new series per
request), and one of that many junk parts (refused one by one), sent through Django's full
request stack in this process (test client, bearer token). Prints seconds and µs per part.
Runs on a throw-away SQLite database and archive (DATABASE_URL is honoured if set). Asserts nothing.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import setup_django  # noqa: E402  (same throw-away database and archive)

BOUNDARY = "StowPartsBench"


def slices(count: int, rows: int) -> list[bytes]:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study, series = generate_uid(), generate_uid()
    out = []
    for index in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, generate_uid()
        ds.PatientID, ds.PatientName, ds.Modality, ds.InstanceNumber = "STOW-1", "Stow^Bench", "CT", index + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, index * 1.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = bytes(rows * rows * 2)
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def body(parts: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--kinds", nargs="+", default=["valid", "junk"], choices=["valid", "junk"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="radloop-stow-") as tmp:
        setup_django(Path(tmp))
        from django.contrib.auth.models import User
        from django.test import Client

        from webapp.accounts.models import ApiToken

        token = ApiToken.issue(User.objects.get(username="bench-admin"), f"stow-{uuid.uuid4().hex[:6]}")[1]
        client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
        content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        print(f"{'parts':>7} {'kind':6} {'status':>6} {'seconds':>8} {'µs/part':>8}")
        for count in args.parts:
            for kind in args.kinds:
                parts = slices(count, args.rows) if kind == "valid" else [b"not dicom %d" % i for i in range(count)]
                payload = body(parts)
                start = time.perf_counter()
                response = client.post("/dicomweb/studies", payload, content_type=content_type)
                seconds = time.perf_counter() - start
                print(f"{count:>7} {kind:6} {response.status_code:>6} {seconds:>8.2f} {seconds / count * 1e6:>8.0f}")


if __name__ == "__main__":
    main()
