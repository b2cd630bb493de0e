"""Convolutional encoders (timm ResNet / ConvNeXt / MobileNet / EfficientNet / vhrfm's tinyres) with an any-band stem.

The timm model's first convolution is replaced by a :class:`~vhrfm.models.spectral.SpectralConv` of the
same shape, so the network accepts any band set; the rest is timm's, unchanged. The spectral stem starts with
band-distinct kernels (the :class:`~vhrfm.models.spectral.WeightGenerator`'s initialisation), so the network can
tell colours apart from the first step.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from vhrfm.models.spectral import SpectralConv


def _find_stem(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError("no convolution found in the timm model")


class _StemSlot(nn.Module):
    """Stands in for the timm stem conv; calls the spectral conv with the batch's band metadata."""

    def __init__(self, conv: SpectralConv):
        super().__init__()
        self.conv = conv
        self.meta = None

    def forward(self, x):
        wl, wd = self.meta
        return self.conv(x, wl, wd)


class AnyBandConvNet(nn.Module):
    kind = "conv"

    def __init__(self, timm_name: str = "resnet18", **timm_kwargs):
        super().__init__()
        self.timm_name = timm_name
        self.body = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=3, **timm_kwargs)
        name, conv = _find_stem(self.body)
        if conv.groups != 1:
            raise ValueError(f"{timm_name}: the stem conv is grouped; not supported")
        slot = _StemSlot(SpectralConv(conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.padding[0]))
        parent = self.body.get_submodule(name.rsplit(".", 1)[0]) if "." in name else self.body
        setattr(parent, name.rsplit(".", 1)[-1], slot)
        self._stem_name = name  # the slot lives inside the timm body only (one copy of its weights)
        self.num_features = self.embed_dim = self.body.num_features
        self.reduction = self.body.feature_info[-1]["reduction"] if hasattr(self.body, "feature_info") else 32

    @property
    def stem(self) -> _StemSlot:
        return self.body.get_submodule(self._stem_name)

    def forward_features(self, x, wavelengths, gsd=None, widths=None) -> torch.Tensor:
        """Spatial features (B, D, H/r, W/r). GSD is accepted for a uniform interface (convs are translation-equivariant)."""
        self.stem.meta = (wavelengths, widths)
        try:
            return self.body.forward_features(x)
        finally:
            self.stem.meta = None

    def forward(self, x, wavelengths, gsd=None, widths=None) -> torch.Tensor:
        return self.forward_features(x, wavelengths, gsd, widths).mean((2, 3))
