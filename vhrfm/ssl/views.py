"""VHR-specific views for self-supervised learning, applied to a band-homogeneous batch (B, C, H, W).

* D4: the 8 rotations/flips (nadir imagery has no "up");
* scale jitter: a random-resized crop whose GSD follows the zoom (gsd_view = gsd * crop_px / out_px);
* band dropout: keep a random non-empty subset of bands (their wavelengths follow);
* spectral jitter: per-sample, per-band gain and offset (in normalised units).

Everything draws from an explicit ``torch.Generator`` so a step's views are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class View:
    image: torch.Tensor        # (B, C, H, W)
    wavelengths: torch.Tensor  # (C,)
    widths: torch.Tensor       # (C,)
    gsd: torch.Tensor          # (B,)


def d4(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random element of the dihedral group D4 per sample."""
    out = torch.empty_like(x)
    ks = torch.randint(0, 4, (x.shape[0],), generator=g)
    flips = torch.randint(0, 2, (x.shape[0],), generator=g)
    for i in range(x.shape[0]):
        xi = torch.rot90(x[i], int(ks[i]), dims=(-2, -1))
        out[i] = xi.flip(-1) if flips[i] else xi
    return out


def resized_crop(x: torch.Tensor, gsd: torch.Tensor, out: int, scale: tuple[float, float], g: torch.Generator):
    """Crop a square of side s*out (s drawn in ``scale``, same for the batch) at random places, resize to ``out``."""
    b, _, h, w = x.shape
    s = float(torch.empty(1).uniform_(*scale, generator=g))
    side = max(4, min(h, w, round(out * s)))
    rows = torch.randint(0, h - side + 1, (b,), generator=g)
    cols = torch.randint(0, w - side + 1, (b,), generator=g)
    crops = torch.stack([x[i, :, r:r + side, c:c + side] for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))])
    if side != out:
        crops = F.interpolate(crops, size=(out, out), mode="area" if side > out else "bilinear", align_corners=None if side > out else False)
    return crops, gsd * (side / out)


def band_dropout(x, wavelengths, widths, p: float, g: torch.Generator):
    """With probability ``p``, keep a random non-empty strict subset of the bands (for the whole batch)."""
    c = x.shape[1]
    if c < 2 or float(torch.rand(1, generator=g)) >= p:
        return x, wavelengths, widths
    keep = torch.rand(c, generator=g) < 0.5
    if not keep.any():
        keep[int(torch.randint(0, c, (1,), generator=g))] = True
    if keep.all():
        keep[int(torch.randint(0, c, (1,), generator=g))] = False
    idx = keep.nonzero().flatten()
    return x[:, idx], wavelengths[idx], widths[idx]


def spectral_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    if strength <= 0:
        return x
    b, c = x.shape[:2]
    gain = 1 + strength * torch.randn(b, c, 1, 1, generator=g)
    offset = strength * torch.randn(b, c, 1, 1, generator=g)
    return x * gain + offset


def make_view(x, wavelengths, widths, gsd, *, out: int, scale=(0.6, 1.4), band_drop: float = 0.3,
              jitter: float = 0.1, g: torch.Generator) -> View:
    img, gsd_v = resized_crop(x, gsd, out, scale, g)
    img = d4(img, g)
    img, wl, wd = band_dropout(img, wavelengths, widths, band_drop, g)
    img = spectral_jitter(img, jitter, g)
    return View(img.contiguous(), wl, wd, gsd_v)
