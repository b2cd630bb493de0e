"""Contrastive self-distillation across VHR views (MoCo v3).

Chen, Xie and He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021:
an online encoder + projector + predictor, a momentum (EMA) copy of encoder + projector, and the
symmetrised InfoNCE loss ``2 tau * CE(q k^T / tau)`` between each view's prediction and the other
view's momentum key. Views are the VHR views of :mod:`vhrfm.ssl.views` (D4, scale jitter updating
GSD, band dropout, spectral jitter); a view pair may also be PAN and MS of the same ground.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 3, last_bn: bool = True) -> nn.Sequential:
    mods = []
    d = in_dim
    for i in range(layers):
        last = i == layers - 1
        mods.append(nn.Linear(d, out_dim if last else hidden, bias=False))
        if not last:
            mods += [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        elif last_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        d = hidden
    return nn.Sequential(*mods)


@torch.no_grad()
def gather(t: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def info_nce(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    q = F.normalize(q, dim=1)
    k = F.normalize(gather(k), dim=1)
    logits = q @ k.T / tau
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return 2 * tau * F.cross_entropy(logits, labels)


class MoCoV3(nn.Module):
    def __init__(self, encoder: nn.Module, proj_dim: int = 128, hidden: int = 512, tau: float = 0.2,
                 momentum: float = 0.99):
        super().__init__()
        self.encoder = encoder
        d = encoder.num_features
        self.projector = mlp(d, hidden, proj_dim, 3)
        self.predictor = mlp(proj_dim, hidden, proj_dim, 2, last_bn=False)
        self.momentum_encoder = copy.deepcopy(encoder)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in list(self.momentum_encoder.parameters()) + list(self.momentum_projector.parameters()):
            p.requires_grad_(False)
        self.tau, self.base_momentum = tau, momentum

    @torch.no_grad()
    def update_momentum(self, progress: float) -> float:
        """EMA update with the cosine momentum schedule from ``base_momentum`` to 1; returns the momentum used."""
        m = 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2
        for online, target in ((self.encoder, self.momentum_encoder), (self.projector, self.momentum_projector)):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(m).add_(po.detach(), alpha=1 - m)
        return m

    @torch.no_grad()
    def keys(self, v) -> torch.Tensor:
        self.momentum_encoder.train(self.training)
        return self.momentum_projector(self.momentum_encoder(v.image, v.wavelengths, v.gsd, v.widths))

    def queries_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(feats))

    def forward(self, v1, v2) -> dict:
        q1 = self.queries_from_features(self.encoder(v1.image, v1.wavelengths, v1.gsd, v1.widths))
        q2 = self.queries_from_features(self.encoder(v2.image, v2.wavelengths, v2.gsd, v2.widths))
        k1, k2 = self.keys(v1), self.keys(v2)
        loss = info_nce(q1, k2, self.tau) + info_nce(q2, k1, self.tau)
        return {"loss": loss, "contrastive": loss.detach()}
