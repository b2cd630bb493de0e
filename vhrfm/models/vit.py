"""An any-band, GSD-aware Vision Transformer built from timm's blocks.

Patch embedding: :class:`~vhrfm.models.spectral.SpectralConv` (kernels generated from each band's
wavelength, DOFA-style). Positions: sin-cos in ground units (Scale-MAE-style), so a tile at 2 m and one
at 0.5 m place their patches at their true ground distance. Small patches (8 px) keep fine textures.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from vhrfm.models.spectral import SpectralConv, gsd_sincos_pos_embed


class AnyBandViT(nn.Module):
    kind = "vit"

    def __init__(self, embed_dim: int = 192, depth: int = 12, num_heads: int = 3, patch_size: int = 8,
                 mlp_ratio: float = 4.0, ref_gsd: float = 1.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.embed_dim = self.num_features = embed_dim
        self.patch_size = patch_size
        self.ref_gsd = ref_gsd
        self.patch_embed = SpectralConv(embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=d) for d in dpr])
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear) and not hasattr(m, "_keep_init"):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def patchify(self, x, wavelengths, gsd, widths=None):
        """(B, C, H, W) -> tokens (B, N, D) with positions added, and the grid (h, w)."""
        b, _, hh, ww = x.shape
        p = self.patch_size
        if hh % p or ww % p:
            raise ValueError(f"image size {hh}x{ww} must be a multiple of the patch size {p}")
        t = self.patch_embed(x, wavelengths, widths)
        h, w = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        gsd = torch.as_tensor(gsd, dtype=torch.float32, device=x.device).reshape(-1).expand(b)
        pos = gsd_sincos_pos_embed(h, w, self.embed_dim, gsd * p, self.ref_gsd * p).to(t.dtype)
        return t + pos, (h, w)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the transformer on (B, N, D) patch tokens; returns (B, 1 + N, D) with the class token first."""
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_features(self, x, wavelengths, gsd, widths=None) -> torch.Tensor:
        """Spatial features (B, D, H/p, W/p)."""
        t, (h, w) = self.patchify(x, wavelengths, gsd, widths)
        z = self.encode(t)[:, 1:]
        return z.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)

    def forward(self, x, wavelengths, gsd, widths=None) -> torch.Tensor:
        """Pooled features (B, D): the mean of the patch tokens."""
        t, _ = self.patchify(x, wavelengths, gsd, widths)
        return self.encode(t)[:, 1:].mean(1)
