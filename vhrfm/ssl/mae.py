"""Masked image modelling for any band set, with a fine-texture term.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022: mask most patches, encode
the visible ones, reconstruct the pixels of the masked ones with a light decoder; targets are
per-patch normalised pixels (``norm_pix_loss``), here per band. The decoder's pixel head is
wavelength-conditioned (:class:`~vhrfm.models.spectral.SpectralLinearHead`), so it reconstructs
whatever bands came in.

Fine-texture term: the gradient-difference loss of Mathieu et al., "Deep multi-scale video prediction
beyond mean square error", ICLR 2016 (L1 between the finite differences of prediction and target
inside each patch), which MSE alone blurs; ``texture_weight = 0`` is the ablation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from vhrfm.models.spectral import SpectralLinearHead, gsd_sincos_pos_embed
from vhrfm.models.vit import AnyBandViT


def patchify_pixels(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C, p*p)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c, p * p)


def unpatchify_pixels(t: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """(B, N, C, p*p) -> (B, C, h*p, w*p) for an h x w patch grid."""
    b, _, c, _ = t.shape
    return t.reshape(b, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h * p, w * p)


def random_masking(b: int, n: int, ratio: float, g: torch.Generator, device=None):
    """Indices of kept patches (B, K) and a mask (B, N) with 1 = masked."""
    keep = max(1, int(round(n * (1 - ratio))))
    noise = torch.rand(b, n, generator=g).to(device)
    order = noise.argsort(dim=1)
    kept = order[:, :keep]
    mask = torch.ones(b, n, device=device)
    mask.scatter_(1, kept, 0.0)
    return kept, mask


def gradient_difference(pred: torch.Tensor, target: torch.Tensor, p: int) -> torch.Tensor:
    """Mean L1 of finite-difference gradients inside patches; inputs (..., p*p) -> (...)."""
    a = pred.reshape(*pred.shape[:-1], p, p)
    t = target.reshape(*target.shape[:-1], p, p)
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (t[..., :, 1:] - t[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (t[..., 1:, :] - t[..., :-1, :])
    return dx.abs().mean((-1, -2)) + dy.abs().mean((-1, -2))


class MAE(nn.Module):
    def __init__(self, encoder: AnyBandViT, mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, texture_weight: float = 0.5):
        super().__init__()
        if not isinstance(encoder, AnyBandViT):
            raise TypeError("MAE needs a ViT encoder (patch tokens)")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.texture_weight = texture_weight
        self.p = encoder.patch_size
        self.decoder_dim = decoder_dim
        self.enc_to_dec = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = nn.ModuleList([Block(decoder_dim, decoder_heads, 4.0, qkv_bias=True) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.head = SpectralLinearHead(decoder_dim, self.p * self.p)
        nn.init.normal_(self.mask_token, std=0.02)

    def encode_masked(self, x, wavelengths, gsd, widths, g: torch.Generator):
        tokens, (h, w) = self.encoder.patchify(x, wavelengths, gsd, widths)
        b, n, d = tokens.shape
        kept, mask = random_masking(b, n, self.mask_ratio, g, tokens.device)
        visible = torch.gather(tokens, 1, kept[..., None].expand(-1, -1, d))
        return self.encoder.encode(visible), kept, mask, (h, w)

    def decode(self, z, kept, gsd, hw, wavelengths, widths):
        b = z.shape[0]
        h, w = hw
        n = h * w
        zd = self.enc_to_dec(z)
        full = self.mask_token.expand(b, n, -1).clone().to(zd.dtype)
        full.scatter_(1, kept[..., None].expand(-1, -1, self.decoder_dim), zd[:, 1:])
        gsd = torch.as_tensor(gsd, dtype=torch.float32, device=z.device).reshape(-1).expand(b)
        full = full + gsd_sincos_pos_embed(h, w, self.decoder_dim, gsd * self.p, self.encoder.ref_gsd * self.p).to(full.dtype)
        y = torch.cat([zd[:, :1], full], dim=1)
        for blk in self.decoder:
            y = blk(y)
        y = self.decoder_norm(y)[:, 1:]
        return self.head(y, wavelengths, widths)  # (B, N, C, p*p)

    def targets(self, x):
        t = patchify_pixels(x, self.p)
        mean = t.mean(-1, keepdim=True)
        var = t.var(-1, keepdim=True)
        return (t - mean) / (var + 1e-6).sqrt(), mean, var

    def forward(self, x, wavelengths, gsd, widths, g: torch.Generator) -> dict:
        z, kept, mask, hw = self.encode_masked(x, wavelengths, gsd, widths, g)
        pred = self.decode(z, kept, gsd, hw, wavelengths, widths)
        target, _, _ = self.targets(x)
        per_patch = F.mse_loss(pred, target, reduction="none").mean((-1, -2))  # (B, N)
        mse = (per_patch * mask).sum() / mask.sum()
        tex = (gradient_difference(pred, target, self.p).mean(-1) * mask).sum() / mask.sum()
        loss = mse + self.texture_weight * tex
        return {"loss": loss, "mse": mse.detach(), "texture": tex.detach(), "z": z, "mask": mask}

    @torch.no_grad()
    def reconstruct(self, x, wavelengths, gsd, widths, g: torch.Generator):
        """Masked input, reconstruction (in the input's units) and the pixel mask, for figures."""
        z, kept, mask, (h, w) = self.encode_masked(x, wavelengths, gsd, widths, g)
        pred = self.decode(z, kept, gsd, (h, w), wavelengths, widths)
        _, mean, var = self.targets(x)
        rec = pred * (var + 1e-6).sqrt() + mean
        m = mask[..., None, None].expand_as(rec)
        pix = patchify_pixels(x, self.p)
        rec_img = unpatchify_pixels(torch.where(m > 0, rec, pix), self.p, h, w)
        masked_img = unpatchify_pixels(torch.where(m > 0, torch.zeros_like(pix), pix), self.p, h, w)
        pix_mask = unpatchify_pixels(m[:, :, :1], self.p, h, w)[:, 0]
        return masked_img, rec_img, pix_mask
