"""Variance-invariance-covariance regularisation across VHR views (VICReg).

Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022: one encoder, an expander MLP, and for two views' embeddings ``z1, z2`` (batch x D)

    loss = lambda * MSE(z1, z2) + mu * [v(z1) + v(z2)] + nu * [c(z1) + c(z2)]

with the variance term ``v(z) = mean_d relu(gamma - sqrt(var_d(z) + eps))`` (every embedding dimension keeps a
standard deviation of at least ``gamma`` over the batch) and the covariance term ``c(z) = sum_{i != j} C(z)_ij^2 / D``
(the dimensions are decorrelated). Unlike MoCo v3 (:mod:`vhrfm.ssl.contrastive`) there are no negatives and no
momentum encoder; the variance and covariance terms keep the embedding from collapsing, wholly or to a few
dimensions, which is what chapter 1 compares against the contrastive objective (with the features' effective
rank, :func:`vhrfm.ssl.probe.effective_rank`). Defaults are the paper's: lambda = mu = 25, nu = 1, gamma = 1.
Under DDP the batch statistics are taken over every rank's embeddings (gathered with their gradients).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vhrfm.ssl.contrastive import mlp


def gather_with_grad(z: torch.Tensor) -> torch.Tensor:
    """Every rank's ``z`` concatenated, gradients flowing back to each rank's own part (identity on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z
    import torch.distributed.nn.functional as dnf

    return torch.cat(dnf.all_gather(z.contiguous()))


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on each dimension's standard deviation over the batch: 0 when every dimension's std is >= ``gamma``."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances over the embedding dimension D, divided by D."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_weight: float = 25.0, var_weight: float = 25.0,
                cov_weight: float = 1.0, gamma: float = 1.0) -> dict:
    """VICReg's loss of two views' embeddings (batch x D), with its three terms (detached) for the log."""
    inv = F.mse_loss(z1, z2)
    z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    var = variance_term(z1, gamma) + variance_term(z2, gamma)
    cov = covariance_term(z1) + covariance_term(z2)
    loss = sim_weight * inv + var_weight * var + cov_weight * cov
    return {"loss": loss, "invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


class VICReg(nn.Module):
    def __init__(self, encoder: nn.Module, dim: int = 2048, sim_weight: float = 25.0, var_weight: float = 25.0,
                 cov_weight: float = 1.0):
        super().__init__()
        self.encoder = encoder
        # the paper's expander: Linear-BN-ReLU twice, then Linear (no batch norm on the embedding)
        self.expander = mlp(encoder.num_features, dim, dim, 3, last_bn=False)
        self.weights = dict(sim_weight=sim_weight, var_weight=var_weight, cov_weight=cov_weight)

    def embed(self, v) -> torch.Tensor:
        return self.expander(self.encoder(v.image, v.wavelengths, v.gsd, v.widths))

    def forward(self, v1, v2) -> dict:
        return vicreg_loss(self.embed(v1), self.embed(v2), **self.weights)
