"""Write a phantom as a DICOM CT series (one file per slice) and read such a series back.

Files are CT Image Storage, Explicit VR Little Endian, written with
``dcmwrite(..., enforce_file_format=True)``. Pixels are stored as unsigned 16-bit
with RescaleIntercept -1024 / RescaleSlope 1 (the usual CT encoding; HU round-trip
exactly), or as signed 16-bit with intercept 0 when ``signed=True``.

UIDs are deterministic: derived with ``pydicom.uid.generate_uid(entropy_srcs=...)``
from the phantom's seed, its config and the patient id, so re-writing the same
phantom gives the same Study/Series/SOP Instance UIDs.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from .phantom import Phantom

IMPLEMENTATION_VERSION = "RADLOOP_PHANTOM1"
LUNG_WINDOW = (-600, 1500)   # centre, width


def config_fingerprint(ph: Phantom) -> str:
    """Short hash of the phantom's config: part of every UID's entropy."""
    blob = json.dumps(ph.config.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _ds(value: float) -> str:
    """Decimal String for a mm value: up to 6 decimals, no trailing zeros (<= 16 chars)."""
    text = f"{round(float(value), 6):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=["radloop-phantom", *[str(p) for p in parts]])


def default_study_facts(ph: Phantom, patient_id: str) -> dict:
    """Deterministic patient sex, birth date, study date/time and accession for a phantom."""
    rng = np.random.default_rng([ph.seed, int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16)])
    study_date = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3650)))
    birth = study_date - dt.timedelta(days=int(rng.integers(45 * 365, 85 * 365)))
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    return {
        "patient_sex": str(rng.choice(["M", "F"])), "patient_birth_date": birth.strftime("%Y%m%d"),
        "study_date": study_date.strftime("%Y%m%d"),
        "study_time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        "accession": f"RL{int(rng.integers(10 ** 7, 10 ** 8))}",
    }


def _age(birth: str, study: str) -> str:
    b, s = dt.datetime.strptime(birth, "%Y%m%d"), dt.datetime.strptime(study, "%Y%m%d")
    years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
    return f"{max(0, min(years, 999)):03d}Y"


def _series_dataset(ph: Phantom, uids: dict, facts: dict, texts: dict) -> Dataset:
    """Attributes shared by every slice of the series."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = facts["study_date"]
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = facts["study_time"]
    ds.AccessionNumber = facts["accession"]
    ds.Modality = "CT"
    ds.Manufacturer = "RadLoop phantom"
    ds.ManufacturerModelName = "ml.phantom"
    ds.InstitutionName = "RadLoop"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = texts["study_description"]
    ds.SeriesDescription = texts["series_description"]
    ds.PatientName = texts["patient_name"]
    ds.PatientID = texts["patient_id"]
    ds.PatientBirthDate = facts["patient_birth_date"]
    ds.PatientSex = facts["patient_sex"]
    ds.PatientAge = _age(facts["patient_birth_date"], facts["study_date"])
    ds.BodyPartExamined = "CHEST"
    ds.ScanOptions = "HELICAL MODE"
    ds.ProtocolName = "CHEST ROUTINE"
    _add_acquisition_and_image(ds, ph)
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.StudyID = texts["study_id"]
    ds.SeriesNumber = texts["series_number"]
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PositionReferenceIndicator = ""
    return ds


def _add_acquisition_and_image(ds: Dataset, ph: Phantom) -> None:
    """CT acquisition, image plane and pixel description attributes (rescale is set by the writer)."""
    acq = ph.acquisition
    ds.SliceThickness = _ds(ph.slice_thickness_mm)
    ds.KVP = f"{acq.get('kvp', 120.0):g}"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = _ds(round(ph.spacing_zyx_mm[2] * ph.shape_zyx[2], 3))
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.XRayTubeCurrent = int(acq.get("tube_current_ma", 200))
    ds.ConvolutionKernel = str(acq.get("kernel", "STANDARD"))
    ds.PatientPosition = "FFS"
    ds.ImageOrientationPatient = [_ds(v) for v in (*ph.direction[:, 0], *ph.direction[:, 1])]
    ds.SpacingBetweenSlices = _ds(ph.spacing_zyx_mm[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ph.shape_zyx[1], ph.shape_zyx[2]
    ds.PixelSpacing = [_ds(ph.spacing_zyx_mm[1]), _ds(ph.spacing_zyx_mm[2])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.WindowCenter, ds.WindowWidth = str(LUNG_WINDOW[0]), str(LUNG_WINDOW[1])
    ds.WindowCenterWidthExplanation = "LUNG"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"


def write_dicom_series(ph: Phantom, out_dir, *, patient_id: str, patient_name: str,
                       study_uid: str | None = None, series_uid: str | None = None,
                       study_date: str | None = None, accession: str | None = None,
                       study_description: str = "CT CHEST (RadLoop phantom)",
                       series_description: str = "Axial chest, synthetic phantom",
                       series_number: int = 1, study_id: str = "1", signed: bool = False) -> list[Path]:
    """Write ``ph.hu`` as one CT series, one file per slice, into ``out_dir``.

    Slice ``k`` of ``ph.hu`` (Z, Y, X) becomes ``CT{k+1:04d}.dcm`` with InstanceNumber
    ``k+1`` and ImagePositionPatient = ``ph.voxel_to_patient((k, 0, 0))``. Dates are
    ``YYYYMMDD``. Returns the written paths in slice order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp = config_fingerprint(ph)
    facts = default_study_facts(ph, patient_id)
    if study_date:
        facts["study_date"] = study_date
    if accession:
        facts["accession"] = accession
    study = study_uid or _uid("study", ph.seed, fp, patient_id)
    uids = {"study": study, "series": series_uid or _uid("series", study, series_number, ph.seed, fp),
            "frame": _uid("frame", study, ph.seed, fp)}
    texts = {"patient_id": patient_id, "patient_name": patient_name, "study_description": study_description,
             "series_description": series_description, "series_number": int(series_number), "study_id": study_id}
    base = _series_dataset(ph, uids, facts, texts)
    if signed:
        pixels, intercept, representation = ph.hu.astype(np.int16), 0, 1
    else:
        pixels, intercept, representation = (ph.hu.astype(np.int32) + 1024).astype(np.uint16), -1024, 0
    base.PixelRepresentation = representation
    base.RescaleIntercept = str(intercept)
    paths = []
    for k in range(ph.shape_zyx[0]):
        paths.append(_write_slice(base, ph, k, pixels[k], uids["series"], out))
    return paths


def _write_slice(base: Dataset, ph: Phantom, k: int, pixels: np.ndarray, series_uid: str, out: Path) -> Path:
    ds = base.copy()
    sop_uid = _uid("sop", series_uid, k)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    position = ph.voxel_to_patient((k, 0, 0))
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(position[2])
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    path = out / f"CT{k + 1:04d}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def read_dicom_series(folder) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Read a single-series folder back: (HU int16 (Z, Y, X), spacing_zyx_mm, origin_xyz_mm).

    Slices are sorted by their position along the slice normal; the slice spacing is
    taken from ImagePositionPatient, not SliceThickness. Minimal, for round trips and tests.
    """
    datasets = [pydicom.dcmread(p) for p in sorted(Path(folder).glob("*.dcm"))]
    if not datasets:
        raise FileNotFoundError(f"no .dcm files in {folder}")
    iop = np.array(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
    positions = np.array([d.ImagePositionPatient for d in datasets], float)
    dz = float(np.median(np.diff(positions @ normal))) if len(datasets) > 1 else float(datasets[0].SliceThickness)
    hu = np.stack([d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
                   for d in datasets])
    row, col = (float(v) for v in datasets[0].PixelSpacing)
    return np.rint(hu).astype(np.int16), (dz, row, col), tuple(float(v) for v in positions[0])
