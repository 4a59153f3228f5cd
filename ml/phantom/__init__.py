"""Seedable synthetic chest CT phantoms with exact nodule ground truth, and a DICOM writer.

>>> from ml.phantom import PhantomConfig, generate_phantom
>>> ph = generate_phantom(PhantomConfig.preset("tiny"), seed=1)
>>> ph.hu.shape            # (Z, Y, X), int16 Hounsfield units
(24, 64, 64)

Pure numpy + scipy + pydicom; never imports Django.
"""
from .config import PRESETS, PhantomConfig
from .dicom_io import read_dicom_series, write_dicom_series
from .generate import generate_phantom
from .ground_truth import GroundTruth, load_ground_truth, write_ground_truth
from .phantom import TISSUE_LABELS, Lesion, Phantom

__all__ = [
    "PRESETS", "PhantomConfig", "Phantom", "Lesion", "TISSUE_LABELS", "GroundTruth", "generate_phantom",
    "write_dicom_series", "read_dicom_series", "write_ground_truth", "load_ground_truth",
]
