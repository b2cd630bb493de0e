"""Batch-wide versions of :mod:`vhrfm.ssl.views`' per-sample loops, that run where the images are (CPU or GPU).

On a GPU the pretraining loop spends most of a step making views on the CPU one sample at a time
(``docs/device-runs.md``: our loop 0.46x a bare loop on an H200). These functions draw exactly the same random
numbers from the same ``torch.Generator`` (on the CPU, so a step's views stay reproducible) and return exactly the
same values as :func:`vhrfm.ssl.views.d4`, :func:`~vhrfm.ssl.views.resized_crop` and
:func:`~vhrfm.ssl.views.spectral_jitter` on the CPU (tested), with one indexing operation per batch instead of one
per sample, and on the images' device.

Not yet used by :func:`vhrfm.ssl.train.pretrain`: switching it re-runs every stage of the cpu profile (the
training logs hold timings), so it is measured first (``scripts/device_pretrain_scaling.py bench``) and switched
with the next full re-run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d4(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A random element of the dihedral group D4 per sample: :func:`vhrfm.ssl.views.d4`, eight group-wise ops."""
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
    """:func:`vhrfm.ssl.views.resized_crop` with the crops gathered in one indexing operation."""
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


def spectral_jitter(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """:func:`vhrfm.ssl.views.spectral_jitter`, its gains and offsets drawn on the CPU and moved to the images."""
    if strength <= 0:
        return x
    b, c = x.shape[:2]
    gain = 1 + strength * torch.randn(b, c, 1, 1, generator=g)
    offset = strength * torch.randn(b, c, 1, 1, generator=g)
    return x * gain.to(x.device) + offset.to(x.device)
