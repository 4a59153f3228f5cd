"""The voxel grid of a series, as ``ml.volumes.load_series`` builds it, from the archive's rows.

Viewer masks live on this grid, so it must be the same one the AI used: both come from the one grid
rule, ``ml.volumes.plan_grid`` (slices kept, ordered along the normal, duplicates dropped, median
spacing, gaps filled by synthesised slices that get a z index but no file, caps on size).

Conventions are ``ml.volumes``': arrays ``[z, y, x]``; patient coordinates LPS mm ``(x, y, z)``;
``direction`` columns = LPS unit vectors of the x (column), y (row) and z (slice) axes;
``origin_xyz_mm`` = centre of voxel (0, 0, 0).
"""
from __future__ import annotations

import base64
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ml.volumes import SeriesError, plan_grid
from webapp.archive.models import Series

log = logging.getLogger(__name__)

MAX_MASK_VOXELS = 64 * 1024 * 1024  # a 400^3 box; bigger requests are refused, never allocated


class GeometryError(ValueError):
    """The series has no regular voxel grid, or a mask does not fit it; the message says why."""


@dataclass
class SeriesGrid:
    origin_xyz_mm: tuple[float, float, float]
    spacing_zyx_mm: tuple[float, float, float]
    direction: np.ndarray  # (3, 3), columns x, y, z
    shape_zyx: tuple[int, int, int]
    slice_files: dict[int, str]  # z index -> file path in the archive storage (real slices only)

    def as_json(self) -> dict:
        return {
            "origin_xyz_mm": [float(v) for v in self.origin_xyz_mm],
            "spacing_zyx_mm": [float(v) for v in self.spacing_zyx_mm],
            "direction": [[float(v) for v in row] for row in self.direction],
            "shape_zyx": [int(n) for n in self.shape_zyx],
        }

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_zyx_mm)) / 1000.0

    def voxel_to_patient(self, zyx) -> np.ndarray:
        """Voxel indices ``(..., 3)`` (z, y, x) -> patient LPS mm ``(..., 3)`` (x, y, z)."""
        zyx = np.asarray(zyx, dtype=float)
        ijk_mm = zyx[..., ::-1] * np.asarray(self.spacing_zyx_mm)[::-1]
        return np.asarray(self.origin_xyz_mm) + ijk_mm @ self.direction.T

    def patient_to_voxel(self, xyz) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=float)
        ijk_mm = (xyz - np.asarray(self.origin_xyz_mm)) @ np.linalg.inv(self.direction).T
        return (ijk_mm / np.asarray(self.spacing_zyx_mm)[::-1])[..., ::-1]

    def contains_point(self, xyz_mm) -> bool:
        """True when a patient point lies inside the grid (voxel edges included)."""
        zyx = self.patient_to_voxel(xyz_mm)
        return bool(np.all(zyx >= -0.5) and np.all(zyx <= np.asarray(self.shape_zyx) - 0.5))

    def box_volume(self, origin_zyx, hu: np.ndarray):
        """An ``ml.volumes.Volume`` for the sub-box of this grid starting at ``origin_zyx``."""
        from ml.volumes import Volume

        return Volume(hu, self.spacing_zyx_mm, tuple(self.voxel_to_patient(origin_zyx)), self.direction)


def series_grid(series: Series) -> SeriesGrid | None:
    """The series' voxel grid (``ml.volumes.plan_grid`` on the stored images, in InstanceNumber
    order as the AI reads the files), or None when its images cannot form one volume."""
    from webapp.archive.services import image_geometry, volume_caps

    instances = list(series.instances.order_by("instance_number", "pk").only(
        "pk", "instance_number", "image_type", "image_orientation", "rows", "columns", "number_of_frames",
        "position_x_mm", "position_y_mm", "position_z_mm", "pixel_spacing_mm", "frame_of_reference_uid", "file_path",
    ))
    slices = [image_geometry(i) for i in instances]
    if slices:  # SliceThickness is kept per series: a single-slice grid takes it from there
        slices = [dataclasses.replace(s, thickness_mm=series.slice_thickness_mm) for s in slices]
    try:
        plan = plan_grid(slices, **volume_caps())
    except SeriesError:
        return None
    return SeriesGrid(
        origin_xyz_mm=plan.origin_xyz_mm,
        spacing_zyx_mm=plan.spacing_zyx_mm,
        direction=plan.direction,
        shape_zyx=plan.shape_zyx,
        slice_files={int(z): instances[i].file_path for z, i in zip(plan.z_index, plan.order)},
    )


# --- masks ---------------------------------------------------------------------------------------


def decode_mask(payload, grid: SeriesGrid) -> tuple[np.ndarray, np.ndarray]:
    """``{"origin_zyx", "shape_zyx", "bits_b64"}`` -> (bool mask (d, h, w), origin_zyx), checked
    against ``grid``. Raises GeometryError with a readable message."""
    if not isinstance(payload, dict):
        raise GeometryError("mask must be an object with origin_zyx, shape_zyx and bits_b64")
    origin = _int_triple(payload.get("origin_zyx"), "mask.origin_zyx")
    shape = _int_triple(payload.get("shape_zyx"), "mask.shape_zyx")
    if any(n < 1 for n in shape):
        raise GeometryError(f"mask.shape_zyx must be positive, got {shape}")
    if any(o < 0 for o in origin) or any(o + n > g for o, n, g in zip(origin, shape, grid.shape_zyx)):
        raise GeometryError(
            f"the mask box (origin {origin}, shape {shape}) lies outside the series grid {list(grid.shape_zyx)}"
        )
    count = int(np.prod(shape))
    if count > MAX_MASK_VOXELS:
        raise GeometryError(f"the mask box has {count} voxels; at most {MAX_MASK_VOXELS} are accepted")
    bits = payload.get("bits_b64")
    if not isinstance(bits, str):
        raise GeometryError("mask.bits_b64 must be a base64 string")
    try:
        raw = base64.b64decode(bits, validate=True)
    except ValueError:
        raise GeometryError("mask.bits_b64 is not valid base64") from None
    expected = (count + 7) // 8
    if len(raw) != expected:
        raise GeometryError(
            f"mask.bits_b64 holds {len(raw)} bytes; a {shape[0]}x{shape[1]}x{shape[2]} box needs {expected}"
        )
    mask = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=count).reshape(shape).astype(bool)
    return mask, np.asarray(origin)


def encode_mask(mask: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(mask, bool).ravel()).tobytes()).decode("ascii")


def tight(mask: np.ndarray, origin_zyx) -> tuple[np.ndarray, np.ndarray]:
    """The smallest box holding every set voxel, and its origin. The mask must not be empty."""
    nz = np.argwhere(mask)
    lo, hi = nz.min(0), nz.max(0) + 1
    return mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], np.asarray(origin_zyx) + lo


def _int_triple(value, name: str) -> list[int]:
    if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise GeometryError(f"{name} must be a list of three integers")
    return [int(v) for v in value]


# --- Hounsfield units of a box, read from the stored slices -----------------------------------------


def read_hu_box(grid: SeriesGrid, origin_zyx, shape_zyx) -> np.ndarray | None:
    """HU (float32, shape ``shape_zyx``) of a box of the grid, read from the archived slices
    (RescaleSlope/Intercept applied); synthesised gap slices are interpolated like
    ``ml.volumes.load_series`` does. None when a slice cannot be decoded."""
    import pydicom

    from webapp.archive.storage import archive_storage

    storage = archive_storage()
    (z0, y0, x0), (d, h, w) = (int(v) for v in origin_zyx), (int(v) for v in shape_zyx)
    real = sorted(grid.slice_files)
    cache: dict[int, np.ndarray] = {}

    def slice_hu(z: int) -> np.ndarray:
        if z not in cache:
            ds = pydicom.dcmread(storage.path(grid.slice_files[z]))
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
            pixels = ds.pixel_array[y0:y0 + h, x0:x0 + w].astype(np.float32)
            cache[z] = pixels * np.float32(slope) + np.float32(intercept)
        return cache[z]

    out = np.empty((d, h, w), np.float32)
    try:
        for k, z in enumerate(range(z0, z0 + d)):
            if z in grid.slice_files:
                out[k] = slice_hu(z)
            else:
                below = max(r for r in real if r < z)
                above = min(r for r in real if r > z)
                weight = (z - below) / (above - below)
                out[k] = (1 - weight) * slice_hu(below) + weight * slice_hu(above)
    except Exception as exc:  # unreadable file, a pixel codec that is not installed
        log.warning("HU of series grid box not readable: %s: %s", type(exc).__name__, exc)
        return None
    return out


def measure_mask(grid: SeriesGrid, mask: np.ndarray, origin_zyx) -> dict:
    """Volume (mL), equivalent-sphere diameter (mm), centre, box and axes (patient mm) of a mask on
    the grid, with ``ml.inference.measure`` (the same measurement as the AI's), and mean HU when the
    slices can be read (else ``mean_hu`` None)."""
    from ml.inference.measure import measure

    hu = read_hu_box(grid, origin_zyx, mask.shape)
    values = measure(mask, (0, 0, 0), grid.box_volume(origin_zyx, hu if hu is not None else np.zeros(mask.shape, np.float32)))
    if hu is None:
        values["mean_hu"] = None
    return values
