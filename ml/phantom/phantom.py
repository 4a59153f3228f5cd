"""Result types: :class:`Lesion` (one nodule's analytic truth) and :class:`Phantom` (a volume).

Conventions (shared by every array in a phantom):

* Arrays are indexed ``[z, y, x]`` = ``[slice, row, column]``.
* Patient coordinates are DICOM LPS millimetres: +x towards the patient's left,
  +y posterior, +z superior (head). With the identity ``direction`` a voxel
  ``(k, r, c)`` lies at ``x = ox + c*dx``, ``y = oy + r*dy``, ``z = oz + k*dz``,
  i.e. exactly the DICOM ImagePositionPatient of slice ``k`` plus row/column offsets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .config import PhantomConfig

# Tissue classes of ``Phantom.tissue`` (analytic, before blur and noise).
TISSUE_LABELS: dict[str, int] = {
    "air": 0, "fat": 1, "muscle": 2, "soft_tissue": 3, "lung": 4, "vessel": 5,
    "blood": 6, "liver": 7, "bone_cortical": 8, "bone_cancellous": 9, "disc": 10,
    "csf": 11, "airway": 12, "table": 13, "lesion": 14,
}


@dataclass
class Lesion:
    """One nodule, in patient millimetres.

    ``centre_xyz_mm`` is the centroid of the analytic shape; ``diameter_mm`` the
    equivalent-sphere diameter ``(6 V / pi) ** (1/3)`` of its volume ``volume_ml``;
    ``axes_mm`` the full lengths of the base ellipsoid's principal axes;
    ``hu`` the programmed HU of the solid core (of the whole lesion for ground glass);
    ``bbox_xyz_mm`` = ((xmin, ymin, zmin), (xmax, ymax, zmax)) of the analytic shape.
    ``params`` holds the shape parameters (rotation, lobes, halo) needed to redraw it.
    """

    id: int
    centre_xyz_mm: tuple[float, float, float]
    diameter_mm: float
    axes_mm: tuple[float, float, float]
    volume_ml: float
    hu: float
    texture: str                       # solid | part_solid | ground_glass | calcified
    shape: str                         # sphere | ellipsoid | lobulated
    attached_to: str | None            # None | vessel | pleura
    bbox_xyz_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    params: dict = field(default_factory=dict)

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0

    def to_dict(self) -> dict:
        return {
            "id": self.id, "centre_xyz_mm": list(self.centre_xyz_mm), "diameter_mm": self.diameter_mm,
            "axes_mm": list(self.axes_mm), "volume_ml": self.volume_ml, "hu": self.hu,
            "texture": self.texture, "shape": self.shape, "attached_to": self.attached_to,
            "bbox_xyz_mm": [list(self.bbox_xyz_mm[0]), list(self.bbox_xyz_mm[1])],
            "params": json.loads(json.dumps(self.params)),  # plain lists, as in the JSON file
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Lesion":
        bbox = d["bbox_xyz_mm"]
        return cls(
            id=int(d["id"]), centre_xyz_mm=tuple(d["centre_xyz_mm"]), diameter_mm=float(d["diameter_mm"]),
            axes_mm=tuple(d["axes_mm"]), volume_ml=float(d["volume_ml"]), hu=float(d["hu"]),
            texture=d["texture"], shape=d["shape"], attached_to=d.get("attached_to"),
            bbox_xyz_mm=(tuple(bbox[0]), tuple(bbox[1])), params=dict(d.get("params", {})))


class Geometry:
    """Mixin: index <-> patient conversions from ``origin_xyz_mm``, ``spacing_zyx_mm``, ``direction``."""

    origin_xyz_mm: tuple[float, float, float]
    spacing_zyx_mm: tuple[float, float, float]
    direction: np.ndarray

    def voxel_to_patient(self, zyx) -> np.ndarray:
        """Voxel indices ``(..., 3)`` in (z, y, x) order -> patient LPS mm ``(..., 3)`` in (x, y, z)."""
        zyx = np.asarray(zyx, dtype=float)
        ijk_mm = zyx[..., ::-1] * np.asarray(self.spacing_zyx_mm, float)[::-1]  # (col, row, slice) in mm
        return np.asarray(self.origin_xyz_mm, float) + ijk_mm @ np.asarray(self.direction, float).T

    def patient_to_voxel(self, xyz) -> np.ndarray:
        """Patient LPS mm ``(..., 3)`` in (x, y, z) -> continuous voxel indices ``(..., 3)`` in (z, y, x)."""
        xyz = np.asarray(xyz, dtype=float)
        ijk_mm = (xyz - np.asarray(self.origin_xyz_mm, float)) @ np.linalg.inv(np.asarray(self.direction, float)).T
        return (ijk_mm / np.asarray(self.spacing_zyx_mm, float)[::-1])[..., ::-1]

    def axis_coords_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient (z, y, x) mm of slice / row / column centres, identity direction assumed."""
        nz, ny, nx = self.shape_zyx  # type: ignore[attr-defined]
        dz, dy, dx = self.spacing_zyx_mm
        ox, oy, oz = self.origin_xyz_mm
        return oz + dz * np.arange(nz), oy + dy * np.arange(ny), ox + dx * np.arange(nx)


@dataclass
class Phantom(Geometry):
    """A synthetic chest CT with exact ground truth.

    ``hu``: int16 (Z, Y, X) Hounsfield units after blur, noise and clipping to [-1024, 3071].
    ``label_mask``: uint16 (Z, Y, X); 0 background, ``i`` = voxel centre inside lesion ``i``
    (evaluated from the analytic shape, never from the image).
    ``lung_mask``: bool (Z, Y, X); the lung cavities (vessels and nodules inside included).
    ``tissue``: uint8 (Z, Y, X) analytic tissue classes, see :data:`TISSUE_LABELS`.
    ``vessels``: float32 (M, 8) tube segments ``x0 y0 z0 x1 y1 z1 r0 r1`` in patient mm.
    ``spacing_zyx_mm``: (slice spacing, row spacing, column spacing).
    ``slice_thickness_mm``: nominal reconstructed thickness (may exceed the slice spacing).
    """

    hu: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: np.ndarray
    label_mask: np.ndarray
    lung_mask: np.ndarray
    lesions: list[Lesion]
    seed: int
    config: PhantomConfig
    slice_thickness_mm: float
    tissue: np.ndarray
    vessels: np.ndarray
    acquisition: dict = field(default_factory=dict)
    anatomy: dict = field(default_factory=dict)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_zyx_mm)) / 1000.0

    def lesion(self, lesion_id: int) -> Lesion:
        for lesion in self.lesions:
            if lesion.id == lesion_id:
                return lesion
        raise KeyError(lesion_id)
