"""VHR-specific views for self-supervised learning, applied to a band-homogeneous batch (B, C, H, W).

* D4: the 8 rotations/flips (nadir imagery has no "up");
* scale jitter: a random-resized crop whose GSD follows the zoom (gsd_view = gsd * crop_px / out_px);
* band dropout: keep a random non-empty subset of bands (their wavelengths follow);
* spectral jitter: per-sample, per-band gain and offset (in normalised units).

Everything draws from an explicit ``torch.Generator`` (on the CPU) so a step's views are reproducible; the images
stay on their device (the pretraining loop moves a batch to the GPU before its views: made on the CPU one sample
at a time they held a GPU run to 0.41 of a bare loop's speed, ``docs/device-runs.md``). The values are those of
the per-sample loops they replace (``tests/test_views.py``), so the cpu profile's results did not move.
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
    """A random element of the dihedral group D4 per sample: eight group-wise operations per batch."""
    ks = torch.randint(0, 4, (x.shape[0],), generator=g)
    flips = torch.randint(0, 2, (x.shape[0],), generator=g)
    out = torch.empty_like(x)
    for k in range(4):
        for f in range(2):
            idx = ((ks == k) & (flips == f)).nonzero().flatten()
            if idx.numel():
                idx = idx.to(x.device)
                xi = torch.rot90(x[idx], k, dims=(-2, -1))
                out[idx] = xi.flip(-1) if f else xi
    return out


def resized_crop(x: torch.Tensor, gsd: torch.Tensor, out: int, scale: tuple[float, float], g: torch.Generator):
    """Crop a square of side s*out (s drawn in ``scale``, same for the batch) at random places, resize to ``out``;
    the crops are gathered in one indexing operation."""
    b, _, h, w = x.shape
    s = float(torch.empty(1).uniform_(*scale, generator=g))
    side = max(4, min(h, w, round(out * s)))
    rows = torch.randint(0, h - side + 1, (b,), generator=g)
    cols = torch.randint(0, w - side + 1, (b,), generator=g)
    ar = torch.arange(side)
    r = (rows[:, None] + ar).to(x.device)  # (B, side)
    c = (cols[:, None] + ar).to(x.device)
    bi = torch.arange(b, device=x.device)
    ch = torch.arange(x.shape[1], device=x.device)
    # every dimension indexed, so the crops come out (B, C, side, side) in the natural layout: a permuted gather
    # is "contiguous" for one band yet strided like channels-last, and the convolutions then round differently
    crops = x[bi[:, None, None, None], ch[None, :, None, None], r[:, None, :, None], c[:, None, None, :]]
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
    return x[:, idx.to(x.device)], wavelengths[idx], widths[idx]


def spectral_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Per-sample, per-band gain and offset (in normalised units), drawn on the CPU and moved to the images."""
    if strength <= 0:
        return x
    b, c = x.shape[:2]
    gain = 1 + strength * torch.randn(b, c, 1, 1, generator=g)
    offset = strength * torch.randn(b, c, 1, 1, generator=g)
    return x * gain.to(x.device) + offset.to(x.device)


def make_view(x, wavelengths, widths, gsd, *, out: int, scale=(0.6, 1.4), band_drop: float = 0.3,
              jitter: float = 0.1, g: torch.Generator) -> View:
    img, gsd_v = resized_crop(x, gsd, out, scale, g)
    img = d4(img, g)
    img, wl, wd = band_dropout(img, wavelengths, widths, band_drop, g)
    img = spectral_jitter(img, jitter, g)
    return View(img.contiguous(), wl, wd, gsd_v)
