"""Controlled sensor simulation from real pixels: another sensor's bands, GSD, blur, noise and radiometric scale.

This is **simulation**: every result computed on simulated imagery is labelled so and kept apart from
results on real sensor pairs. Steps, applied to one real image (C, H, W) of known bands and GSD:

1. **Spectral**: a target band close to a source band (centre within a quarter of its width) is that
   band (band selection); any other target band is a weighted sum of the source bands, weights = the
   overlap of Gaussian spectral responses (centre and FWHM from the sensor registry), normalised per
   target band. A target band that no source band overlaps cannot be simulated (clear error).
2. **Spatial**: a Gaussian blur standing for the target's MTF (value ``mtf_nyquist`` at its Nyquist
   frequency, a typical 0.1–0.3 for VHR optics), then area resampling to the target GSD (only coarser).
3. **Radiometric**: the target's digital-number scale (``gain``, e.g. 11- or 12-bit counts), Gaussian
   noise at a given SNR, quantisation to the target's bit depth.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from vhrfm.errors import VHRFMInputError
from vhrfm.sensors import get_sensor


def _gauss_overlap(c1, w1, c2, w2) -> float:
    """Overlap integral of two unit-area Gaussians given by centre and FWHM (nm)."""
    s1, s2 = w1 / 2.355, w2 / 2.355
    v = s1 * s1 + s2 * s2
    return math.exp(-((c1 - c2) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)


def srf_weights(src_wl, src_wd, dst_wl, dst_wd, min_overlap: float = 0.02, select_within: float = 0.25) -> np.ndarray:
    """(n_dst, n_src) weights mixing source bands into each target band (rows sum to 1).

    A target band whose centre lies within ``select_within`` x its width of a source band's centre is that
    band (band selection: the same colour seen by another sensor); any other target band (e.g. a broad
    PAN band) is the overlap-weighted mix of the source bands.
    """
    w = np.array([[_gauss_overlap(c2, w2, c1, w1) for c1, w1 in zip(src_wl, src_wd)] for c2, w2 in zip(dst_wl, dst_wd)])
    for i, (c2, w2) in enumerate(zip(dst_wl, dst_wd)):
        d = np.abs(np.asarray(src_wl, float) - c2)
        j = int(d.argmin())
        if d[j] <= select_within * w2 and w2 <= 2.5 * float(np.asarray(src_wd)[j]):
            w[i] = 0.0
            w[i, j] = 1.0
    # relative to the best possible overlap of that target band with itself
    peak = np.array([_gauss_overlap(c, wd, c, wd) for c, wd in zip(dst_wl, dst_wd)])[:, None]
    rel = w / peak
    bad = rel.max(1) < min_overlap
    if bad.any():
        raise VHRFMInputError("target band outside the source's spectral range: it cannot be simulated",
                              expected=f"bands overlapping {[round(float(c)) for c in src_wl]} nm",
                              found=f"{[round(float(c)) for c in np.asarray(dst_wl)[bad]]} nm")
    return w / w.sum(1, keepdims=True)


def mtf_sigma(mtf_nyquist: float) -> float:
    """Gaussian PSF sigma (in output pixels) whose MTF equals ``mtf_nyquist`` at 0.5 cycles/pixel."""
    if not 0 < mtf_nyquist < 1:
        raise ValueError("mtf_nyquist must be in (0, 1)")
    return math.sqrt(-math.log(mtf_nyquist) / (2 * math.pi**2 * 0.25))


def simulate(image: np.ndarray, src_wl, src_wd, src_gsd: float, dst_wl, dst_wd, dst_gsd: float, *,
             mtf_nyquist: float = 0.3, gain: float = 1.0, snr: float | None = 100.0, bit_depth: int | None = None,
             rng: np.random.Generator | None = None) -> np.ndarray:
    """One real image (C, H, W) as the target sensor would see it: (C', H', W') float32. See the module docstring."""
    if dst_gsd < src_gsd - 1e-9:
        raise VHRFMInputError("cannot simulate a finer GSD than the source", expected=f">= {src_gsd} m", found=dst_gsd)
    x = np.tensordot(srf_weights(src_wl, src_wd, dst_wl, dst_wd), image.astype(np.float64), axes=(1, 0))
    factor = dst_gsd / src_gsd
    sigma = mtf_sigma(mtf_nyquist) * factor  # in source pixels
    if sigma > 0.3:
        x = np.stack([ndimage.gaussian_filter(b, sigma, mode="reflect") for b in x])
    if factor > 1 + 1e-9:
        h, w = x.shape[1:]
        out = (max(1, round(h / factor)), max(1, round(w / factor)))
        x = np.stack([ndimage.zoom(b, (out[0] / h, out[1] / w), order=1, grid_mode=True, mode="nearest") for b in x])
    x = x * gain
    rng = rng or np.random.default_rng(0)
    if snr:
        x = x + rng.normal(0, 1, x.shape) * (np.abs(x).mean() / snr)
    if bit_depth:
        x = np.clip(np.round(x), 0, 2**bit_depth - 1)
    return x.astype(np.float32)


def sensor_target(sensor_id: str, bands=("red", "green", "blue"), group: str | None = None) -> dict:
    """Wavelengths, widths, bit depth and band names of a registry sensor's bands (PAN: ``bands=("pan",)``)."""
    s = get_sensor(sensor_id)
    names = list(bands) if bands else s.band_names(group)
    return {"sensor": s.id, "bands": names, "wavelengths": s.wavelengths(names), "widths": s.widths(names),
            "bit_depth": s.bit_depth}


__all__ = ["srf_weights", "mtf_sigma", "simulate", "sensor_target"]
