"""Self-supervised knowledge distillation: no labels, the teacher's spatial features are the targets.

Loss = ``cos_weight`` x (1 - cosine) between the student's projected feature map and the teacher's, per
location (FitNets-style hint learning through a 1x1 projector, Romero et al., ICLR 2015), plus
``rel_weight`` x the similarity-preserving term (Tung & Mori, ICCV 2019): the batch's sample-by-sample
similarity matrices of pooled student and teacher features should agree. The teacher is frozen and in
eval mode; both see the same augmented view. Only the student encoder is published.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def similarity_preserving(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """||norm(Gs) - norm(Gt)||_F^2 / B^2 with G = F F^T over the batch, rows L2-normalised."""
    b = fs.shape[0]
    gs = F.normalize(fs.reshape(b, -1) @ fs.reshape(b, -1).T, dim=1)
    gt = F.normalize(ft.reshape(b, -1) @ ft.reshape(b, -1).T, dim=1)
    return ((gs - gt) ** 2).sum() / (b * b)


class FeatureKD(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module, cos_weight: float = 1.0, rel_weight: float = 1.0):
        super().__init__()
        self.encoder = student
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.projector = nn.Sequential(nn.Conv2d(student.embed_dim, teacher.embed_dim, 1), nn.BatchNorm2d(teacher.embed_dim),
                                       nn.ReLU(inplace=True), nn.Conv2d(teacher.embed_dim, teacher.embed_dim, 1))
        self.cos_weight, self.rel_weight = cos_weight, rel_weight

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x, wavelengths, gsd, widths=None, g=None) -> dict:
        with torch.no_grad():
            ft = self.teacher.forward_features(x, wavelengths, gsd, widths)
        fs = self.encoder.forward_features(x, wavelengths, gsd, widths)
        ps = self.projector(fs)
        if ps.shape[-2:] != ft.shape[-2:]:
            ps = F.interpolate(ps, size=ft.shape[-2:], mode="bilinear", align_corners=False)
        cos = 1 - F.cosine_similarity(ps, ft, dim=1).mean()
        rel = similarity_preserving(fs.mean((2, 3)), ft.mean((2, 3)))
        loss = self.cos_weight * cos + self.rel_weight * rel
        return {"loss": loss, "cosine": cos.detach(), "relational": rel.detach()}
