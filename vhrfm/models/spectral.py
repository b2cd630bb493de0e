"""Wavelength-conditioned layers: any band set, in any order, through one set of weights.

A small hypernetwork maps each band's centre wavelength and width to that band's convolution kernel
(and an output head's weights), as DOFA does (Xiong et al., "Neural Plasticity-Inspired Multimodal
Foundation Model for Earth Observation", 2024). The kernels of the bands present are stacked and
applied as one convolution, averaged over bands so that one PAN band and four MS bands covering the
same light give features on the same scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vhrfm.errors import VHRFMInputError

MIN_NM, MAX_NM = 350.0, 2500.0  # the wavelength range the generators were built for


def spectral_encoding(wavelengths: torch.Tensor, widths: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """Fourier features of centre wavelength (µm) plus log-width: (C,) -> (C, dim + 1)."""
    lam = wavelengths.float() / 1000.0
    freqs = torch.exp(torch.linspace(math.log(1.0), math.log(64.0), dim // 2, device=lam.device))
    ang = 2 * math.pi * lam[:, None] * freqs[None]
    w = torch.log(widths.float().clamp(min=1.0) / 100.0)[:, None]
    return torch.cat([torch.sin(ang), torch.cos(ang), w], dim=1)


def check_wavelengths(wavelengths: torch.Tensor) -> None:
    if wavelengths.ndim != 1 or wavelengths.numel() == 0:
        raise VHRFMInputError("wavelengths must be a non-empty 1-D sequence (one per band)", found=tuple(wavelengths.shape))
    lo, hi = float(wavelengths.min()), float(wavelengths.max())
    if lo < MIN_NM or hi > MAX_NM:
        raise VHRFMInputError("band wavelength outside the model's range", expected=f"{MIN_NM:g}-{MAX_NM:g} nm",
                              found=[round(float(v), 1) for v in wavelengths])


def _band_meta(x: torch.Tensor, wavelengths, widths) -> tuple[torch.Tensor, torch.Tensor]:
    wl = torch.as_tensor(wavelengths, dtype=torch.float32, device=x.device)
    if wl.ndim == 2:  # (B, C): a batch must share its band set
        if not torch.all(wl == wl[:1]):
            raise VHRFMInputError("a batch must share one band set", found="different wavelengths within the batch")
        wl = wl[0]
    if widths is None:
        wd = torch.full_like(wl, 60.0)
    else:
        wd = torch.as_tensor(widths, dtype=torch.float32, device=x.device)
        wd = wd[0] if wd.ndim == 2 else wd
    check_wavelengths(wl)
    if wl.numel() != x.shape[1]:
        raise VHRFMInputError("band count does not match the wavelengths given", expected=x.shape[1], found=wl.numel())
    return wl, wd


class WeightGenerator(nn.Module):
    """MLP from a band's spectral encoding to a flattened weight tensor (and a bias contribution).

    Every linear layer starts with Xavier-uniform weights and zero biases (the ViT's own initialisation), so
    each band starts with its own generated weights: a stem sees colour, and a per-band output head predicts each
    band apart, from the first step. An earlier initialisation (a small per-band part under a shared output bias
    of std 1/sqrt(fan_in)) gave every band nearly the same kernel: band-kernel correlation 0.9999 for a
    ResNet-18 stem (see :func:`band_kernel_correlation`), and contrastive pretraining did not separate them."""

    def __init__(self, n_weights: int, n_bias: int, hidden: int = 128, enc_dim: int = 32):
        super().__init__()
        self.enc_dim = enc_dim
        self.mlp = nn.Sequential(nn.Linear(enc_dim + 1, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.to_weight = nn.Linear(hidden, n_weights)
        self.to_bias = nn.Linear(hidden, n_bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, wavelengths: torch.Tensor, widths: torch.Tensor):
        h = self.mlp(spectral_encoding(wavelengths, widths, self.enc_dim))
        return self.to_weight(h), self.to_bias(h)


class SpectralConv(nn.Module):
    """A convolution whose input kernels are generated per band from its wavelength (any C)."""

    def __init__(self, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, hidden: int = 128):
        super().__init__()
        self.out_channels, self.k, self.stride, self.padding = out_channels, kernel_size, stride, padding
        self.gen = WeightGenerator(out_channels * kernel_size * kernel_size, out_channels, hidden)

    def kernels(self, wavelengths, widths=None, x: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The (O, C, k, k) weight and (O,) bias this layer generates for one band set.

        ``x`` (optional) is the input the kernels are for: its band count and device are checked against
        the wavelengths; without it the band set alone is checked."""
        if x is None:
            wl = torch.as_tensor(wavelengths, dtype=torch.float32)
            x = torch.zeros(1, wl.shape[-1], 1, 1)
        wl, wd = _band_meta(x, wavelengths, widths)
        w, b = self.gen(wl, wd)  # (C, O*k*k), (C, O)
        c = wl.numel()
        return w.view(c, self.out_channels, self.k, self.k).transpose(0, 1) / c, b.mean(0)

    def forward(self, x: torch.Tensor, wavelengths, widths=None) -> torch.Tensor:
        weight, bias = self.kernels(wavelengths, widths, x)
        return F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=self.stride, padding=self.padding)

    @torch.no_grad()
    def fixed(self, wavelengths, widths=None) -> FixedSpectralConv:
        """A plain convolution with the kernels this layer generates for one band set (for export and deployment)."""
        weight, bias = self.kernels(wavelengths, widths)
        conv = FixedSpectralConv(weight.shape[1], self.out_channels, self.k, stride=self.stride, padding=self.padding)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        return conv


class FixedSpectralConv(nn.Conv2d):
    """A :class:`SpectralConv` frozen to one band set: an ordinary convolution that ignores band metadata."""

    def forward(self, x: torch.Tensor, *_meta) -> torch.Tensor:
        return super().forward(x)


@torch.no_grad()
def band_kernel_correlation(conv: SpectralConv, wavelengths, widths=None) -> torch.Tensor:
    """(C, C) Pearson correlation between the kernels ``conv`` generates for each band.

    A diagnostic of colour sensitivity: off-diagonal values near 1 mean every band gets (nearly) the same
    kernel, so the layer sees a weighted brightness and cannot tell the bands apart; near 0, the bands are
    filtered independently."""
    weight, _ = conv.kernels(wavelengths, widths)
    return torch.corrcoef(weight.transpose(0, 1).flatten(1).double()).float()


class SpectralLinearHead(nn.Module):
    """Per-band linear output (e.g. an MAE pixel decoder): features (..., D) -> (..., C, n_out), weights from wavelengths."""

    def __init__(self, in_dim: int, n_out: int, hidden: int = 128):
        super().__init__()
        self.in_dim, self.n_out = in_dim, n_out
        self.gen = WeightGenerator(in_dim * n_out, n_out, hidden)

    def forward(self, feats: torch.Tensor, wavelengths: torch.Tensor, widths: torch.Tensor | None = None) -> torch.Tensor:
        wl = torch.as_tensor(wavelengths, dtype=torch.float32, device=feats.device)
        wl = wl[0] if wl.ndim == 2 else wl
        wd = torch.full_like(wl, 60.0) if widths is None else torch.as_tensor(widths, dtype=torch.float32, device=feats.device)
        wd = wd[0] if wd.ndim == 2 else wd
        w, b = self.gen(wl, wd)  # (C, D*n_out), (C, n_out)
        w = w.view(-1, self.n_out, self.in_dim)
        return torch.einsum("...d,cod->...co", feats, w.to(feats.dtype)) + b.to(feats.dtype)


def gsd_sincos_pos_embed(h: int, w: int, dim: int, gsd: torch.Tensor, ref_gsd: float = 1.0) -> torch.Tensor:
    """2-D sin-cos positional encoding with positions in ground units (Scale-MAE, Reed et al., ICCV 2023).

    ``gsd``: (B,) metres per pixel of each image's patch grid step; positions are scaled by gsd / ref_gsd,
    so the same ground distance gets the same encoding whatever the resolution. Returns (B, h*w, dim).
    """
    if dim % 4:
        raise ValueError("dim must be divisible by 4")
    gsd = torch.as_tensor(gsd, dtype=torch.float32).reshape(-1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ys, xs = ys.reshape(-1).to(gsd.device), xs.reshape(-1).to(gsd.device)
    scale = (gsd / ref_gsd)[:, None]
    omega = 1.0 / (10000 ** (torch.arange(dim // 4, dtype=torch.float32, device=gsd.device) / (dim // 4)))

    def enc(p):  # (B, N) -> (B, N, dim/2)
        ang = p[..., None] * omega
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)

    return torch.cat([enc(ys[None] * scale), enc(xs[None] * scale)], dim=-1)
