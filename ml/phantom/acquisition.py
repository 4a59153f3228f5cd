"""Acquisition physics: one shared blur (partial volume / PSF) and correlated noise, then int16 HU.

Noise and resolution are both set by the reconstruction kernel, so white noise is
added *before* the single Gaussian PSF pass: every structure (and the noise) goes
through exactly the same filter. The white-noise amplitude is chosen so that the
filtered noise has the requested standard deviation in a uniform region.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

HU_MIN, HU_MAX = -1024, 3071
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
TRUNCATE = 3.0
NOISE_CHUNK_SLICES = 16


def psf_sigma_vox(spacing_zyx_mm, psf_fwhm_mm: float, thickness_mm: float) -> tuple[float, float, float]:
    """Gaussian sigmas in voxels (z, y, x).

    In-plane: the PSF FWHM. Along z: the slab average is already in the occupancies,
    so only the slice-profile tails (0.25 x thickness) remain; overlapping slices
    (spacing < thickness) are correlated accordingly. Sigmas below 0.3 voxel (a kernel
    that keeps > 99 % of the centre weight) are dropped to save a pass over the volume.
    """
    dz, dy, dx = spacing_zyx_mm
    sz = 0.25 * thickness_mm / dz
    sy = psf_fwhm_mm * FWHM_TO_SIGMA / dy
    sx = psf_fwhm_mm * FWHM_TO_SIGMA / dx
    return tuple(float(s) if s >= 0.3 else 0.0 for s in (sz, sy, sx))  # type: ignore[return-value]


def noise_gain(sigma_vox) -> float:
    """Std of Gaussian-filtered unit white noise (product of the 1-D kernels' L2 norms)."""
    gain = 1.0
    for s in sigma_vox:
        if s > 0:
            radius = int(TRUNCATE * s + 0.5)
            delta = np.zeros(2 * radius + 1)
            delta[radius] = 1.0
            kernel = ndi.gaussian_filter1d(delta, s, truncate=TRUNCATE, mode="constant")
            gain *= float(np.sqrt(np.sum(kernel ** 2)))
    return gain


def acquire(img: np.ndarray, sigma_vox, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Add correlated noise of std ``noise_hu`` and blur ``img`` (float32 (Z, Y, X), modified in place).

    Returns int16 HU clipped to [-1024, 3071].
    """
    amplitude = np.float32(noise_hu / noise_gain(sigma_vox))
    for z0 in range(0, img.shape[0], NOISE_CHUNK_SLICES):
        chunk = img[z0:z0 + NOISE_CHUNK_SLICES]
        white = rng.standard_normal(chunk.shape, dtype=np.float32)
        white *= amplitude
        chunk += white
    if any(s > 0 for s in sigma_vox):
        ndi.gaussian_filter(img, sigma_vox, output=img, mode="nearest", truncate=TRUNCATE)
    np.clip(img, HU_MIN, HU_MAX, out=img)
    np.rint(img, out=img)
    return img.astype(np.int16)
