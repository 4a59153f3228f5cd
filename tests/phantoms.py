"""Phantom studies for pipeline tests: small, with a clearly visible nodule, known ground truth."""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

from ml.phantom import PhantomConfig, generate_phantom, write_dicom_series


@lru_cache(maxsize=4)
def small_phantom_with_nodule(min_diameter_mm: float = 7.0):
    """The first seed whose small phantom has a solid, free-standing nodule of at least this size."""
    for seed in range(1000, 1200):
        ph = generate_phantom(PhantomConfig.preset("small"), seed=seed)
        big = [l for l in ph.lesions if l.diameter_mm >= min_diameter_mm and l.texture == "solid"]
        if big:
            return ph
    raise AssertionError("no small phantom with a large solid nodule in the seed range")


def write_phantom(folder: Path, ph, patient_id: str = "PHANTOM-1") -> list[Path]:
    return write_dicom_series(ph, folder, patient_id=patient_id, patient_name=f"Phantom^{patient_id}")


def ingest_phantom(batch, folder: Path, ph, patient_id: str = "PHANTOM-1"):
    from webapp.archive import services

    for path in write_phantom(folder, ph, patient_id):
        services.ingest_stream(batch, path.name, io.BytesIO(path.read_bytes()))
