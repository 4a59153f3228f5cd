"""CT volumes in Hounsfield units with their patient geometry, DICOM series assembly, resampling.

Conventions (shared by all of ``ml``):

* Arrays are indexed ``[z, y, x]`` = ``[slice, row, column]``; voxel indices given as ``(..., 3)``
  arrays are in ``(z, y, x)`` order.
* Patient coordinates are DICOM LPS millimetres ``(x, y, z)``.
* ``direction`` is 3x3; its columns are the unit vectors (in LPS) of the x (column), y (row)
  and z (slice) voxel axes. ``origin_xyz_mm`` is the centre of voxel ``(0, 0, 0)``.
  ``patient = origin + direction @ (index_xyz * spacing_xyz)``.

Series assembly (:func:`load_series`): slices are ordered by the projection of
ImagePositionPatient on the slice normal (never by InstanceNumber); the slice spacing is the
median step of those projections. Duplicate positions keep the first slice and are reported.
**Gaps** (a step more than 1.5x the median) are *filled by linear interpolation* between the
neighbouring slices, and reported as a warning with the number of slices synthesised; a
series whose steps vary otherwise (more than 10 %) is refused with :class:`SeriesError`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

GAP_FACTOR = 1.5            # step > GAP_FACTOR * median step: a gap
IRREGULAR_TOLERANCE = 0.10  # other steps must be within 10 % of the median
DUPLICATE_TOLERANCE_MM = 0.01


class SeriesError(ValueError):
    """The slices cannot form one volume; the message says why."""


@dataclass
class Volume:
    """A CT volume.

    ``hu``: (Z, Y, X) float32 or int16 Hounsfield units. ``spacing_zyx_mm``: (slice, row, column)
    spacing in mm. ``origin_xyz_mm``: LPS mm of voxel (0, 0, 0). ``direction``: 3x3, columns =
    LPS unit vectors of the x / y / z voxel axes.
    """

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        self.spacing_zyx_mm = tuple(float(v) for v in self.spacing_zyx_mm)
        self.origin_xyz_mm = tuple(float(v) for v in self.origin_xyz_mm)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be 3-D (Z, Y, X), got shape {self.hu.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_zyx_mm)) / 1000.0

    def voxel_to_patient(self, zyx) -> np.ndarray:
        """Voxel indices ``(..., 3)`` (z, y, x), may be fractional -> patient LPS mm ``(..., 3)`` (x, y, z)."""
        zyx = np.asarray(zyx, dtype=float)
        ijk_mm = zyx[..., ::-1] * np.asarray(self.spacing_zyx_mm)[::-1]  # (x, y, z) index * spacing
        return np.asarray(self.origin_xyz_mm) + ijk_mm @ self.direction.T

    def patient_to_voxel(self, xyz) -> np.ndarray:
        """Patient LPS mm ``(..., 3)`` (x, y, z) -> continuous voxel indices ``(..., 3)`` (z, y, x)."""
        xyz = np.asarray(xyz, dtype=float)
        ijk_mm = (xyz - np.asarray(self.origin_xyz_mm)) @ np.linalg.inv(self.direction).T
        return (ijk_mm / np.asarray(self.spacing_zyx_mm)[::-1])[..., ::-1]

    def crop(self, start_zyx, stop_zyx) -> "Volume":
        """Sub-volume ``hu[z0:z1, y0:y1, x0:x1]`` (clipped to the volume) with the matching origin."""
        start = np.clip(np.asarray(start_zyx, int), 0, self.shape)
        stop = np.clip(np.asarray(stop_zyx, int), start, self.shape)
        sub = self.hu[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
        return Volume(sub, self.spacing_zyx_mm, tuple(self.voxel_to_patient(start)), self.direction)

    @classmethod
    def from_phantom(cls, ph) -> "Volume":
        """The HU image and geometry of an :class:`ml.phantom.Phantom` (no copy of the array)."""
        return cls(ph.hu, ph.spacing_zyx_mm, ph.origin_xyz_mm, np.asarray(ph.direction, float))


@dataclass
class SeriesReport:
    """What :func:`load_series` did: ``warnings`` (human sentences), ``excluded`` (index, reason)."""

    n_input: int = 0
    n_used: int = 0
    warnings: list[str] = field(default_factory=list)
    excluded: list[tuple[int, str]] = field(default_factory=list)
    duplicates: int = 0
    gaps_filled: int = 0
    slice_spacing_mm: float | None = None

    def warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)


def _as_dataset(item):
    import pydicom

    if isinstance(item, (str, Path)):
        return pydicom.dcmread(str(item))
    return item


def _orientation(ds) -> np.ndarray:
    return np.round(np.asarray([float(v) for v in ds.ImageOrientationPatient]), 4)


def _select_slices(datasets: list, report: SeriesReport) -> list:
    """Drop localizers and slices whose orientation or matrix differs from the majority."""
    candidates = []
    for i, ds in enumerate(datasets):
        image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
        if "LOCALIZER" in image_type:
            report.excluded.append((i, "localizer (ImageType LOCALIZER)"))
        elif not all(hasattr(ds, a) for a in ("ImagePositionPatient", "ImageOrientationPatient", "PixelData")):
            report.excluded.append((i, "missing ImagePositionPatient, ImageOrientationPatient or pixels"))
        else:
            candidates.append((i, ds))
    if not candidates:
        raise SeriesError("no usable image slices (all localizers or missing geometry)")
    keys = [(tuple(_orientation(ds)), int(ds.Rows), int(ds.Columns)) for _, ds in candidates]
    values, counts = np.unique(np.array([str(k) for k in keys]), return_counts=True)
    majority = values[np.argmax(counts)]
    kept = []
    for (i, ds), key in zip(candidates, keys):
        if str(key) == majority:
            kept.append(ds)
        else:
            report.excluded.append((i, f"orientation/size {key} differs from the series {majority}"))
    return kept


def _direction(ds) -> np.ndarray:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    return np.stack([row_dir, col_dir, normal / np.linalg.norm(normal)], axis=1)  # columns x, y, z


def _hu(ds) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return ds.pixel_array.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _order_and_dedupe(datasets: list, normal: np.ndarray, report: SeriesReport):
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    datasets, heights, positions = [datasets[i] for i in order], heights[order], positions[order]
    keep = np.concatenate([[True], np.diff(heights) > DUPLICATE_TOLERANCE_MM])
    if not keep.all():
        report.duplicates = int((~keep).sum())
        report.warn(f"{report.duplicates} slice(s) at a duplicate position dropped (first kept)")
    return [d for d, k in zip(datasets, keep) if k], heights[keep], positions[keep]


def _stack_with_gaps(images: list[np.ndarray], heights: np.ndarray, report: SeriesReport):
    """Stack slices; fill gaps by linear interpolation. Returns (hu (Z, Y, X) float32, spacing_mm)."""
    if len(images) == 1:
        return images[0][None], None
    steps = np.diff(heights)
    spacing = float(np.median(steps))
    n_steps = np.rint(steps / spacing).astype(int)
    if np.any(np.abs(steps - n_steps * spacing) > IRREGULAR_TOLERANCE * spacing) or np.any(n_steps < 1):
        raise SeriesError(f"irregular slice positions (steps {np.round(steps, 3).tolist()} mm)")
    out = [images[0]]
    for k, n in enumerate(n_steps):
        for j in range(1, n):  # synthesised slices between k and k+1
            w = j / n
            out.append((1 - w) * images[k] + w * images[k + 1])
        out.append(images[k + 1])
    missing = int((n_steps - 1).sum())
    if missing:
        report.gaps_filled = missing
        report.warn(f"{missing} missing slice(s) in {int((n_steps > 1).sum())} gap(s) filled by linear interpolation")
    return np.stack(out).astype(np.float32), spacing


def load_series(paths_or_datasets) -> tuple[Volume, SeriesReport]:
    """Assemble one CT series (file paths or pydicom datasets) into a :class:`Volume` in HU.

    Raises :class:`SeriesError` when no volume can be formed. See the module docstring for
    the ordering, spacing, duplicate and gap rules.
    """
    items = list(paths_or_datasets)
    report = SeriesReport(n_input=len(items))
    if not items:
        raise SeriesError("empty series")
    datasets = _select_slices([_as_dataset(it) for it in items], report)
    direction = _direction(datasets[0])
    datasets, heights, positions = _order_and_dedupe(datasets, direction[:, 2], report)
    hu, spacing = _stack_with_gaps([_hu(ds) for ds in datasets], heights, report)
    if spacing is None:
        spacing = float(getattr(datasets[0], "SliceThickness", 1.0) or 1.0)
        report.warn("single-slice series: slice spacing taken from SliceThickness")
    row_mm, col_mm = (float(v) for v in datasets[0].PixelSpacing)
    report.n_used, report.slice_spacing_mm = len(datasets), spacing
    for i, reason in report.excluded:
        log.info("slice %d excluded: %s", i, reason)
    volume = Volume(hu, (spacing, row_mm, col_mm), tuple(positions[0]), direction)
    return volume, report


# -- resampling -------------------------------------------------------------------------------


def resample_array(array: np.ndarray, src_spacing_zyx, dst_spacing_zyx, dst_shape, *,
                   offset_zyx=(0.0, 0.0, 0.0), order: int = 1, cval: float = 0.0,
                   dtype=np.float32) -> np.ndarray:
    """Resample ``array`` (Z, Y, X) on an axis-aligned grid.

    Destination voxel ``j`` (z, y, x) lies at source voxel ``offset_zyx + j * dst_spacing / src_spacing``
    (both grids share direction; ``offset_zyx`` in source voxels). ``order`` 1 = trilinear,
    0 = nearest. Outside the source: ``cval``.
    """
    scale = np.asarray(dst_spacing_zyx, float) / np.asarray(src_spacing_zyx, float)
    src = array if array.dtype in (np.float32, np.float64) or order == 0 else array.astype(np.float32)
    out = ndimage.affine_transform(src, scale, offset=np.asarray(offset_zyx, float), output_shape=tuple(dst_shape),
                                   order=order, mode="constant", cval=cval, prefilter=False)
    return out.astype(dtype, copy=False)


def resample(volume: Volume, spacing_zyx_mm, *, order: int = 1) -> Volume:
    """Resample a volume to ``spacing_zyx_mm`` over the same physical extent (same origin/direction).

    The new shape is ``ceil((n - 1) * old / new) + 1`` per axis so every original voxel centre is
    covered. Returns float32 HU (trilinear) or the input dtype for ``order=0``.
    """
    old = np.asarray(volume.spacing_zyx_mm)
    new = np.asarray(spacing_zyx_mm, float)
    shape = np.floor((np.asarray(volume.shape) - 1) * old / new + 1e-6).astype(int) + 1
    dtype = volume.hu.dtype if order == 0 else np.float32
    hu = resample_array(volume.hu, old, new, shape, order=order, cval=-1024.0, dtype=dtype)
    return Volume(hu, tuple(new), volume.origin_xyz_mm, volume.direction)


def resample_to_reference(array: np.ndarray, source: Volume, reference: Volume, *, order: int = 1,
                          cval: float = 0.0, dtype=np.float32) -> np.ndarray:
    """Map ``array`` sampled on ``source``'s grid onto ``reference``'s grid (same direction assumed).

    Use it to bring network outputs back to the original CT grid: trilinear (``order=1``) for
    probabilities/images, then threshold; ``order=0`` (nearest) for label masks.
    """
    offset = source.patient_to_voxel(reference.voxel_to_patient(np.zeros(3)))
    return resample_array(array, source.spacing_zyx_mm, reference.spacing_zyx_mm, reference.shape,
                          offset_zyx=offset, order=order, cval=cval, dtype=dtype)


def resample_mask(mask: np.ndarray, source: Volume, reference: Volume) -> np.ndarray:
    """Label-aware resampling of a boolean mask: trilinear on the 0/1 mask, then ``>= 0.5``."""
    return resample_to_reference(mask.astype(np.float32), source, reference, order=1) >= 0.5
