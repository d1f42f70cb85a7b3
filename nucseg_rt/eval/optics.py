"""Microscope optics and camera for the seeded test volumes (numpy only): Gaussian PSF with a
halo, uneven background, photon and read noise. Shared by ``synth`` and ``realtex``."""

from __future__ import annotations

import numpy as np

__all__ = ["blur", "uneven_background", "acquire"]


def _gauss_fourier(shape, sigmas):
    """Product of 1D Gaussian transfer functions for an rfftn of ``shape``."""
    out = None
    for ax, (n, s) in enumerate(zip(shape, sigmas)):
        f = np.fft.rfftfreq(n) if ax == len(shape) - 1 else np.fft.fftfreq(n)
        g = np.exp(-2 * (np.pi * f * s) ** 2).astype(np.float32)
        g = g.reshape([-1 if i == ax else 1 for i in range(len(shape))])
        out = g if out is None else out * g
    return out


def blur(img: np.ndarray, sigmas, *, halo: float = 0.0, halo_sigma: float = 12.0) -> np.ndarray:
    """``img`` blurred by a Gaussian of ``sigmas`` (one per axis, px; reflect padding), plus
    ``halo`` times a wide isotropic Gaussian of ``halo_sigma`` px (out-of-focus light).
    Returns float32 of ``img``'s shape."""
    pad = [(int(3 * s) + 1, int(3 * s) + 1) for s in sigmas]
    p = np.pad(img, pad, mode="reflect")
    tf = _gauss_fourier(p.shape, sigmas)
    if halo:
        tf = tf + halo * _gauss_fourier(p.shape, [halo_sigma] * img.ndim)
    out = np.fft.irfftn(np.fft.rfftn(p) * tf, s=p.shape, axes=tuple(range(p.ndim))).astype(np.float32)
    return out[tuple(slice(a, a + n) for (a, _), n in zip(pad, img.shape))]


def uneven_background(rng: np.random.Generator, shape) -> np.ndarray:
    """A smooth (Z, Y, X) float32 illumination field around 1 (three random cosines, >= 0.2)."""
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    bg = np.ones(shape, np.float32)
    for _ in range(3):
        k = rng.normal(size=3) * 2.5
        bg = bg + 0.25 * np.cos(k[0] * z + k[1] * y + k[2] * x + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return np.clip(bg, 0.2, None)


def acquire(rng: np.random.Generator, img: np.ndarray, bg: np.ndarray, *, peak=(150.0, 1500.0),
            bg_fraction=(0.02, 0.12), read_noise=(1.0, 5.0)) -> np.ndarray:
    """Camera: ``img`` (1 = a bright nucleus) as photon counts at a peak drawn from ``peak``, plus
    background ``bg`` at a level drawn from ``bg_fraction`` of the peak; Poisson noise, gain 1-3,
    read noise (sd drawn from ``read_noise``), offset 100 -> uint16."""
    pk = rng.uniform(*peak)
    bg_level = pk * rng.uniform(*bg_fraction)
    photons = rng.poisson(np.clip(img * pk + bg * bg_level, 0, None)).astype(np.float32)
    read = rng.uniform(*read_noise)
    out = 100 + photons * rng.uniform(1.0, 3.0) + rng.normal(0, read, size=img.shape)
    return np.clip(np.round(out), 0, 65535).astype(np.uint16)
