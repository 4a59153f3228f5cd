"""CT volumes in Hounsfield units with their patient geometry, DICOM series assembly, resampling.

Conventions (shared by all of ``ml``):

* Arrays are indexed ``[z, y, x]`` = ``[slice, row, column]``; voxel indices given as ``(..., 3)``
  arrays are in ``(z, y, x)`` order.
* Patient coordinates are DICOM LPS millimetres ``(x, y, z)``.
* ``direction`` is 3x3; its columns are the unit vectors (in LPS) of the x (column), y (row)
  and z (slice) voxel axes. ``origin_xyz_mm`` is the centre of voxel ``(0, 0, 0)``.
  ``patient = origin + direction @ (index_xyz * spacing_xyz)``.

Series assembly (:func:`load_series`): the rule "these images form one regular CT grid" lives
here, once, in :func:`plan_grid`, on plain per-image values (:class:`SliceGeometry`); the archive
and the viewer's grid call it with values from the database, the AI with values from the files.

* Localizers, multi-frame images, images without a finite position / orientation / pixel spacing,
  and images whose orientation, matrix, pixel spacing or frame of reference differ from the
  majority are left out, each with a reason.
* The orientation vectors are normalised (:func:`unit_direction`, the only place the slice normal
  is computed); non-perpendicular row / column vectors refuse the grid.
* Slices are ordered by the projection of ImagePositionPatient on the slice normal (never by
  InstanceNumber); the slice spacing is the median step. Duplicate positions keep the first slice.
* **Gaps** (a step that is a whole multiple of the median) are filled by linear interpolation and
  reported; steps that vary otherwise (more than 10 %) refuse the grid.
* Hostile geometry is refused before any allocation: at most ``max_slices`` slices,
  ``max_voxels`` voxels, and no more synthesised slices than acquired ones.

:func:`geometry_warnings` states, in sentences a reader can act on, every problem of a series'
geometry, whether or not a grid can still be built.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

IRREGULAR_TOLERANCE = 0.10  # every step must be within 10 % of a whole multiple of the median
DUPLICATE_TOLERANCE_MM = 0.01
UNIT_TOLERANCE = 1e-3       # |length - 1| of an orientation vector above this is flagged
ORTHOGONAL_TOLERANCE = 1e-3  # |cos| of the angle between row and column vectors above this refuses
MAX_SLICES = 2000           # a grid (acquired + synthesised slices) larger than this is refused
MAX_VOXELS = 2000 * 512 * 512  # ~2 GiB of float32 HU


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


# -- the grid rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceGeometry:
    """What the grid rule needs to know about one image, as plain values (no pixels).

    ``position_xyz_mm``: ImagePositionPatient (LPS mm) or None. ``orientation``: the six
    ImageOrientationPatient cosines as given (row vector, then column vector) or None.
    ``pixel_spacing_mm``: PixelSpacing (row spacing, column spacing) or None.
    """

    position_xyz_mm: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing_mm: tuple[float, ...] | None
    rows: int
    columns: int
    frame_of_reference_uid: str = ""
    frames: int = 1
    localizer: bool = False
    has_pixels: bool = True
    thickness_mm: float | None = None


@dataclass
class GridPlan:
    """A regular slice grid made of some of the input images.

    ``order``: input indices of the slices used, in grid order; ``z_index``: the grid z of each
    (a gap leaves z values without a slice, filled by interpolation). ``shape_zyx``, ``spacing_zyx_mm``,
    ``origin_xyz_mm`` (centre of voxel 0) and ``direction`` (columns x, y, z) as in :class:`Volume`.
    """

    order: list[int]
    z_index: np.ndarray
    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: np.ndarray
    warnings: list[str] = field(default_factory=list)
    excluded: list[tuple[int, str]] = field(default_factory=list)
    duplicates: int = 0
    gaps_filled: int = 0


def _finite(values, n: int) -> np.ndarray | None:
    """``values`` as n floats when every one is a finite number, else None."""
    if values is None:
        return None
    try:
        array = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return None
    return array if array.shape == (n,) and np.all(np.isfinite(array)) else None


def unit_direction(orientation) -> np.ndarray:
    """ImageOrientationPatient (six cosines) -> 3x3 direction, columns = unit x (row direction),
    y (column direction) and z (slice normal) vectors in LPS. The one place the vectors are
    normalised: a scaled orientation gives the same grid as a unit one. Raises SeriesError for
    a missing, non-finite, zero-length or parallel pair, or non-perpendicular vectors."""
    iop = _finite(orientation, 6)
    if iop is None:
        raise SeriesError("ImageOrientationPatient is missing or not six finite numbers")
    row, col = iop[:3], iop[3:]
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        raise SeriesError("ImageOrientationPatient has a zero-length vector")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if abs(float(row @ col)) > ORTHOGONAL_TOLERANCE:
        raise SeriesError(
            f"the row and column vectors of ImageOrientationPatient are not perpendicular "
            f"({_angle_deg(row, col):.1f}°): the slice grid cannot be trusted"
        )
    normal = np.cross(row, col)
    return np.stack([row, col, normal / np.linalg.norm(normal)], axis=1)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _exclusion(s: SliceGeometry) -> str | None:
    """Why this image cannot be a slice of any grid (None when it can)."""
    if s.localizer:
        return "localizer (ImageType LOCALIZER)"
    if s.frames != 1:
        return f"multi-frame image ({s.frames} frames)"
    if not s.has_pixels or s.position_xyz_mm is None or s.orientation is None:
        return "missing ImagePositionPatient, ImageOrientationPatient or pixels"
    if _finite(s.position_xyz_mm, 3) is None:
        return "ImagePositionPatient is not three finite numbers"
    spacing = _finite(s.pixel_spacing_mm, 2)
    if spacing is None or np.any(spacing <= 0):
        return "PixelSpacing is missing, zero or negative"
    try:
        unit_direction(s.orientation)
    except SeriesError as exc:
        return str(exc)
    return None


def _group_key(s: SliceGeometry) -> tuple:
    return (tuple(np.round(_finite(s.orientation, 6), 4)), int(s.rows), int(s.columns),
            tuple(np.round(_finite(s.pixel_spacing_mm, 2), 3)), s.frame_of_reference_uid or "")


def _describe_difference(key: tuple, majority: tuple) -> str:
    parts = []
    if key[0] != majority[0]:
        parts.append("a different ImageOrientationPatient")
    if key[1:3] != majority[1:3]:
        parts.append(f"matrix {key[1]}×{key[2]} (the series {majority[1]}×{majority[2]})")
    if key[3] != majority[3]:
        parts.append(f"pixel spacing {key[3][0]:g}×{key[3][1]:g} mm (the series {majority[3][0]:g}×{majority[3][1]:g} mm)")
    if key[4] != majority[4]:
        parts.append("another FrameOfReferenceUID")
    return "differs from the series: " + ", ".join(parts)


def _slice_spacing(steps: np.ndarray, heights: np.ndarray, max_slices: int) -> tuple[float, np.ndarray]:
    """The slice spacing (mm) and each step as a whole number of spacings. The median step is the
    spacing; when that leaves steps off the grid (half the slices missing, say), the smallest step
    is tried. Raises SeriesError for irregular steps or a grid of more than ``max_slices``."""
    error = None
    for spacing in dict.fromkeys([float(np.median(steps)), float(steps.min())]):
        ratios = steps / spacing
        n_total = float(np.rint(ratios).sum()) + 1
        if n_total > max_slices:
            error = error or SeriesError(
                f"the slice positions span {n_total:.0f} slices of {spacing:.3g} mm; at most {max_slices} are built "
                f"(positions from {heights[0]:.1f} to {heights[-1]:.1f} mm along the slice normal)"
            )
            continue
        n_steps = np.rint(ratios).astype(int)
        if np.any(np.abs(steps - n_steps * spacing) > IRREGULAR_TOLERANCE * spacing) or np.any(n_steps < 1):
            error = error or SeriesError(f"irregular slice positions (steps {np.round(steps, 3).tolist()} mm)")
            continue
        return spacing, n_steps
    raise error


def plan_grid(slices: list[SliceGeometry], *, max_slices: int = MAX_SLICES, max_voxels: int = MAX_VOXELS) -> GridPlan:
    """The regular slice grid formed by ``slices`` (see the module docstring for the rules).

    Ties in position keep the input order, so callers pass images in the order they prefer to
    keep (files as given, rows by InstanceNumber). Raises :class:`SeriesError` with the reason
    when no trustworthy grid can be formed; never allocates pixels.
    """
    excluded: list[tuple[int, str]] = []
    candidates: list[int] = []
    for i, s in enumerate(slices):
        reason = _exclusion(s)
        if reason:
            excluded.append((i, reason))
        else:
            candidates.append(i)
    if not candidates:
        if any(r.startswith("multi-frame") for _, r in excluded):
            raise SeriesError("multi-frame CT (one file per series, e.g. Enhanced CT) is not supported by the AI pre-read")
        reasons = sorted({r for _, r in excluded if not r.startswith("localizer")})
        raise SeriesError(f"no usable image slices: {'; '.join(reasons)}" if reasons
                          else "no usable image slices (all localizers)")
    keys = {i: _group_key(slices[i]) for i in candidates}
    counts = Counter(keys[i] for i in candidates)
    majority = max(counts, key=lambda k: (counts[k], -min(i for i in candidates if keys[i] == k)))
    kept = [i for i in candidates if keys[i] == majority]
    for i in candidates:
        if keys[i] != majority:
            excluded.append((i, _describe_difference(keys[i], majority)))
    excluded.sort()

    warnings: list[str] = []
    if len(kept) < len(candidates):
        warnings.append(f"{len(candidates) - len(kept)} image(s) differ from the rest of the series in orientation, "
                        f"matrix, pixel spacing or frame of reference and are left out of the volume")
    first = slices[kept[0]]
    direction = unit_direction(first.orientation)
    normal = direction[:, 2]
    positions = np.array([_finite(slices[i].position_xyz_mm, 3) for i in kept])  # (n, 3)
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    kept, heights, positions = [kept[k] for k in order], heights[order], positions[order]
    keep = np.concatenate([[True], np.diff(heights) > DUPLICATE_TOLERANCE_MM])
    duplicates = int((~keep).sum())
    if duplicates:
        warnings.append(f"{duplicates} slice(s) at a duplicate position dropped (first kept)")
    kept, heights, positions = [k for k, ok in zip(kept, keep) if ok], heights[keep], positions[keep]

    row_mm, col_mm = (float(v) for v in first.pixel_spacing_mm)
    rows, columns = int(first.rows), int(first.columns)
    gaps_filled = 0
    if len(kept) == 1:
        spacing = float(first.thickness_mm) if first.thickness_mm and np.isfinite(first.thickness_mm) and first.thickness_mm > 0 else 1.0
        warnings.append("single-slice series: slice spacing taken from SliceThickness")
        z_index = np.zeros(1, dtype=int)
    else:
        steps = np.diff(heights)
        spacing, n_steps = _slice_spacing(steps, heights, max_slices)
        gaps_filled = int((n_steps - 1).sum())
        if gaps_filled > len(kept):
            raise SeriesError(
                f"{gaps_filled} slices would be synthesised to fill gaps between {len(kept)} acquired ones; "
                f"a volume that is mostly interpolated cannot be trusted"
            )
        if gaps_filled:
            warnings.append(f"{gaps_filled} missing slice(s) in {int((n_steps > 1).sum())} gap(s) "
                            f"filled by linear interpolation")
        z_index = np.concatenate([[0], np.cumsum(n_steps)])
    voxels = (int(z_index[-1]) + 1) * rows * columns
    if voxels > max_voxels:
        raise SeriesError(f"the volume would have {voxels} voxels; at most {max_voxels} are built")
    return GridPlan(
        order=kept, z_index=z_index, shape_zyx=(int(z_index[-1]) + 1, rows, columns),
        spacing_zyx_mm=(spacing, row_mm, col_mm), origin_xyz_mm=tuple(float(v) for v in positions[0]),
        direction=direction, warnings=warnings, excluded=excluded, duplicates=duplicates, gaps_filled=gaps_filled,
    )


def geometry_warnings(slices: list[SliceGeometry]) -> list[str]:
    """Every geometry problem of a series, as sentences for the study page and the viewer, or []."""
    return assess_geometry(slices)[1]


def assess_geometry(slices: list[SliceGeometry], **caps) -> tuple[GridPlan | None, list[str]]:
    """The series' grid (None when none can be built) and every geometry problem as sentences.

    Checks each image (frame of reference, pixel spacing, orientation vectors, positions) and then
    whether a grid can be built (:func:`plan_grid`, ``caps`` passed on): images left out,
    duplicates, gaps, or why no volume can be built. Localizers are expected and not reported."""
    images = [s for s in slices if not s.localizer]
    out: list[str] = []

    def count(predicate) -> int:
        return sum(1 for s in images if predicate(s))

    frames = sorted({s.frame_of_reference_uid for s in images if s.frame_of_reference_uid})
    if len(frames) > 1:
        out.append(f"The images of this series lie in {len(frames)} frames of reference (FrameOfReferenceUID differs).")
    n = count(lambda s: s.frames == 1 and s.pixel_spacing_mm is None)
    if n:
        out.append(f"PixelSpacing is missing on {n} image(s).")
    n = count(lambda s: s.pixel_spacing_mm is not None and (_finite(s.pixel_spacing_mm, 2) is None
                                                            or np.any(_finite(s.pixel_spacing_mm, 2) <= 0)))
    if n:
        out.append(f"PixelSpacing is zero, negative or not a number on {n} image(s).")
    oriented = [_finite(s.orientation, 6) for s in images]
    n = sum(1 for s, iop in zip(images, oriented) if s.frames == 1 and iop is None)
    if n:
        out.append(f"ImageOrientationPatient is missing or not finite on {n} image(s).")
    lengths = [(float(np.linalg.norm(iop[:3])), float(np.linalg.norm(iop[3:]))) for iop in oriented if iop is not None]
    non_unit = [pair for pair in lengths if max(abs(v - 1.0) for v in pair) > UNIT_TOLERANCE]
    if non_unit:
        shown = ", ".join(f"{a:.3g}" for a in non_unit[0])
        out.append(f"ImageOrientationPatient vectors are not unit length on {len(non_unit)} image(s) "
                   f"(lengths {shown}); they were normalised.")
    skewed = [iop for iop in oriented if iop is not None and min(np.linalg.norm(iop[:3]), np.linalg.norm(iop[3:])) > 1e-6
              and abs(float(iop[:3] @ iop[3:])) / float(np.linalg.norm(iop[:3]) * np.linalg.norm(iop[3:])) > ORTHOGONAL_TOLERANCE]
    if skewed:
        out.append(f"ImageOrientationPatient row and column vectors are not perpendicular on {len(skewed)} image(s) "
                   f"({_angle_deg(skewed[0][:3], skewed[0][3:]):.1f}°).")
    n = count(lambda s: s.position_xyz_mm is not None and _finite(s.position_xyz_mm, 3) is None)
    if n:
        out.append(f"ImagePositionPatient is not a finite number (NaN or infinity) on {n} image(s).")
    n = count(lambda s: s.frames == 1 and s.position_xyz_mm is None)
    if n:
        out.append(f"ImagePositionPatient is missing on {n} image(s).")
    if not images:
        return None, out
    try:
        plan = plan_grid(slices, **caps)
    except SeriesError as exc:
        out.append(f"No CT volume can be built: {exc}.")
        return None, out
    out.extend(w[0].upper() + w[1:] + "." for w in plan.warnings if not w.startswith("single-slice"))
    return plan, out


# -- from files -------------------------------------------------------------------------------


def _as_dataset(item):
    import pydicom

    if isinstance(item, (str, Path)):
        return pydicom.dcmread(str(item))
    return item


def _int_or(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def slice_geometry(ds) -> SliceGeometry:
    """The :class:`SliceGeometry` of a pydicom dataset (top-level attributes only)."""
    from pydicom.multival import MultiValue

    image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]

    def values(keyword):
        value = ds.get(keyword)
        if value is None:
            return None
        many = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        try:
            return tuple(float(v) for v in many)
        except (TypeError, ValueError):
            return (float("nan"),)

    thickness = values("SliceThickness")
    return SliceGeometry(
        position_xyz_mm=values("ImagePositionPatient"),
        orientation=values("ImageOrientationPatient"),
        pixel_spacing_mm=values("PixelSpacing"),
        rows=_int_or(ds.get("Rows"), 0),
        columns=_int_or(ds.get("Columns"), 0),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        frames=_int_or(ds.get("NumberOfFrames"), 1) if ds.get("NumberOfFrames") not in (None, "") else 1,
        localizer="LOCALIZER" in image_type,
        has_pixels="PixelData" in ds,
        thickness_mm=thickness[0] if thickness else None,
    )


def _hu(ds) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return ds.pixel_array.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def load_series(paths_or_datasets, *, max_slices: int = MAX_SLICES, max_voxels: int = MAX_VOXELS) -> tuple[Volume, SeriesReport]:
    """Assemble one CT series (file paths or pydicom datasets) into a :class:`Volume` in HU.

    Raises :class:`SeriesError` when no volume can be formed, before pixels are decoded when the
    geometry is the reason. See the module docstring for the rules and :func:`plan_grid` for
    the caps.
    """
    items = list(paths_or_datasets)
    report = SeriesReport(n_input=len(items))
    if not items:
        raise SeriesError("empty series")
    datasets = [_as_dataset(it) for it in items]
    plan = plan_grid([slice_geometry(ds) for ds in datasets], max_slices=max_slices, max_voxels=max_voxels)
    report.excluded = plan.excluded
    report.duplicates, report.gaps_filled = plan.duplicates, plan.gaps_filled
    for message in plan.warnings:
        report.warn(message)
    for i, reason in report.excluded:
        log.info("slice %d excluded: %s", i, reason)
    hu = np.empty(plan.shape_zyx, dtype=np.float32)  # (Z, Y, X)
    previous_z, previous = None, None
    for z, i in zip(plan.z_index, plan.order):
        image = _hu(datasets[i])
        if image.shape != hu.shape[1:]:
            raise SeriesError(f"an image's pixels are {image.shape}, its Rows/Columns say {hu.shape[1:]}")
        hu[z] = image
        if previous is not None:
            for g in range(previous_z + 1, z):  # synthesised slices between two acquired ones
                w = (g - previous_z) / (z - previous_z)
                hu[g] = (1 - w) * previous + w * image
        previous_z, previous = int(z), image
    report.n_used, report.slice_spacing_mm = len(plan.order), plan.spacing_zyx_mm[0]
    volume = Volume(hu, plan.spacing_zyx_mm, plan.origin_xyz_mm, plan.direction)
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
