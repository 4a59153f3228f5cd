"""Build small in-memory CT series (pydicom datasets) with a chosen geometry, for volume tests."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def make_slice(pixels_hu: np.ndarray, position_xyz, row_dir, col_dir, spacing_rc=(0.8, 0.7), *,
               slope: float = 1.0, intercept: float = -1024.0, instance: int = 1, image_type=("ORIGINAL", "PRIMARY", "AXIAL")):
    """One CT slice dataset whose stored values give ``pixels_hu`` after Rescale (uint16)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position_xyz]
    ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [float(spacing_rc[0]), float(spacing_rc[1])]
    ds.SliceThickness = 1.0
    ds.Rows, ds.Columns = pixels_hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = str(slope)
    ds.RescaleIntercept = str(intercept)
    stored = np.rint((pixels_hu - intercept) / slope).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    return ds


def make_series(hu: np.ndarray, spacing_zyx=(2.0, 0.8, 0.7), origin_xyz=(-10.0, 20.0, -100.0),
                direction=np.eye(3), **kw) -> list:
    """Datasets for every slice of ``hu`` (Z, Y, X); ``direction`` columns = x, y, z axis unit vectors."""
    direction = np.asarray(direction, float)
    out = []
    for k in range(hu.shape[0]):
        pos = np.asarray(origin_xyz, float) + direction[:, 2] * spacing_zyx[0] * k
        out.append(make_slice(hu[k], pos, direction[:, 0], direction[:, 1], spacing_zyx[1:], instance=k + 1, **kw))
    return out
