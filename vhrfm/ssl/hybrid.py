"""Hybrid objective: masked image modelling plus contrastive alignment of the masked views.

In the spirit of CMAE (Huang et al., "Contrastive Masked Autoencoders are Stronger Vision Learners",
TPAMI 2023) and iBOT: each of two VHR views is masked and reconstructed (MAE loss, with the texture
term), and the mean of each view's *visible* tokens, projected and predicted, is pulled towards the
momentum encoder's key of the other, *full* view (MoCo v3 InfoNCE). One encoder, both signals.
"""

from __future__ import annotations

import torch
from torch import nn

from vhrfm.ssl.contrastive import MoCoV3, info_nce
from vhrfm.ssl.mae import MAE


class Hybrid(nn.Module):
    def __init__(self, mae: MAE, contrastive_weight: float = 1.0, **moco_kw):
        super().__init__()
        self.mae = mae
        self.encoder = mae.encoder
        self.moco = MoCoV3(mae.encoder, **moco_kw)
        self.weight = contrastive_weight

    def update_momentum(self, progress: float) -> float:
        return self.moco.update_momentum(progress)

    def forward(self, v1, v2, g: torch.Generator) -> dict:
        o1 = self.mae(v1.image, v1.wavelengths, v1.gsd, v1.widths, g)
        o2 = self.mae(v2.image, v2.wavelengths, v2.gsd, v2.widths, g)
        q1 = self.moco.queries_from_features(o1["z"][:, 1:].mean(1))
        q2 = self.moco.queries_from_features(o2["z"][:, 1:].mean(1))
        k1, k2 = self.moco.keys(v1), self.moco.keys(v2)
        ctr = info_nce(q1, k2, self.moco.tau) + info_nce(q2, k1, self.moco.tau)
        rec = (o1["loss"] + o2["loss"]) / 2
        return {"loss": rec + self.weight * ctr, "mse": (o1["mse"] + o2["mse"]) / 2,
                "texture": (o1["texture"] + o2["texture"]) / 2, "contrastive": ctr.detach()}
