"""Small, hand-checkable DICOM files made in memory (the phantom generator makes the big ones)."""
from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1337."


def uid(name: str) -> str:
    """A deterministic valid UID derived from a readable name."""
    return generate_uid(prefix=ROOT, entropy_srcs=[name])


def ct_slice(
    *,
    study: str = "study-1",
    series: str = "series-1",
    index: int = 0,
    rows: int = 16,
    columns: int = 16,
    spacing_mm: tuple[float, float] = (0.7, 0.7),
    slice_spacing_mm: float = 2.5,
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^Jane",
    study_date: str = "20260102",
    accession: str = "ACC1",
    modality: str = "CT",
    hu: np.ndarray | None = None,
    sop: str | None = None,
    orientation: tuple = (1, 0, 0, 0, 1, 0),
    **extra,
) -> FileDataset:
    """One CT slice with int16 HU-ready pixels (RescaleIntercept -1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop or uid(f"{series}-{index}")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(series)
    ds.FrameOfReferenceUID = uid(f"{study}-for")
    ds.PatientID, ds.PatientName, ds.PatientSex, ds.PatientBirthDate = patient_id, patient_name, "F", "19600101"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = study_date, "101500", accession, "1"
    ds.StudyDescription, ds.SeriesDescription, ds.SeriesNumber = "CT CHEST", "Axial", 1
    ds.Modality, ds.Manufacturer = modality, "Test"
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [-100.0, -100.0, -50.0 + index * slice_spacing_mm]
    ds.SliceLocation = -50.0 + index * slice_spacing_mm
    ds.PixelSpacing = list(spacing_mm)
    ds.SliceThickness = slice_spacing_mm
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = -600, 1500
    if hu is None:
        hu = np.full((rows, columns), -1000, dtype=np.int16)
        hu[rows // 4 : 3 * rows // 4, columns // 4 : 3 * columns // 4] = 40 + index
    ds.PixelData = (np.asarray(hu, dtype=np.int16) + 1024).astype(np.int16).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    return ds


def to_bytes(ds: FileDataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def series_bytes(n: int = 5, **kwargs) -> list[bytes]:
    return [to_bytes(ct_slice(index=i, **kwargs)) for i in range(n)]
