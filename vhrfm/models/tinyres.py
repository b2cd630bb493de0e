"""Narrow residual networks for CPU latency at batch one: the distillation chapter's fastest students.

Depthwise-separable mobile networks (MobileNetV3, LCNet, MobileNetV4) have few FLOPs, but run as many small
operations; in PyTorch at batch one on two CPU cores their time is mostly per-operation overhead, and chapter 2's
architecture scan measured every one of them at 4-5x the ResNet-18 teacher's speed however narrow. These networks
spend their budget differently: a 3x3 stride-2 stem and one ResNet basic block (two dense 3x3 convolutions and a
shortcut; He et al., "Deep residual learning for image recognition", CVPR 2016) per stage, four stages at strides
4 to 32, no final 1x1 expansion. Few, dense, well-vectorised convolutions instead of many thin ones.

They are timm ``ByobNet`` configurations (timm's "bring your own blocks" network), registered in timm's model
registry under ``vhrfm_tinyres<width>`` so that :class:`~vhrfm.models.conv.AnyBandConvNet` builds them like any timm
network (the stem's first convolution becomes the any-band :class:`~vhrfm.models.spectral.SpectralConv`), with
timm's ``feature_info`` for the dense heads. ``<width>`` is the first stage's width; each stage doubles it.
"""

from __future__ import annotations

from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models._registry import generate_default_cfgs
from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg

# first-stage width -> (stage widths, blocks per stage)
TINYRES = {16: ((16, 32, 64, 128), (1, 1, 1, 1)), 24: ((24, 48, 96, 192), (1, 1, 1, 1)),
           32: ((32, 64, 128, 256), (1, 1, 1, 1))}

# timm's registry reads a module's ``default_cfgs`` when a model is registered: no weights to download
default_cfgs = generate_default_cfgs({f"vhrfm_tinyres{w}": {"num_classes": 0, "input_size": (3, 256, 256)} for w in TINYRES})


def tinyres_cfg(width: int) -> ByoModelCfg:
    """The ByobNet configuration of ``vhrfm_tinyres<width>``: stem 3x3 stride 2 of ``width`` channels (no pooling),
    then per stage basic blocks, the first of each at stride 2 (features at strides 2, 4, 8, 16, 32)."""
    if width not in TINYRES:
        raise ValueError(f"tinyres width must be one of {sorted(TINYRES)}; got {width}")
    chs, depths = TINYRES[width]
    return ByoModelCfg(blocks=tuple(ByoBlockCfg(type="basic", d=d, c=c, s=2, br=1.0) for c, d in zip(chs, depths)),
                       stem_chs=width, stem_type="", stem_pool="", num_features=0)


def _create(width: int, pretrained: bool = False, **kwargs) -> ByobNet:
    if pretrained:
        raise ValueError("vhrfm_tinyres networks have no pretrained weights: vhrfm trains its own")
    return build_model_with_cfg(ByobNet, f"vhrfm_tinyres{width}", pretrained=False, model_cfg=tinyres_cfg(width),
                                feature_cfg={"flatten_sequential": True}, **kwargs)


@register_model
def vhrfm_tinyres16(pretrained: bool = False, **kwargs) -> ByobNet:
    return _create(16, pretrained, **kwargs)


@register_model
def vhrfm_tinyres24(pretrained: bool = False, **kwargs) -> ByobNet:
    return _create(24, pretrained, **kwargs)


@register_model
def vhrfm_tinyres32(pretrained: bool = False, **kwargs) -> ByobNet:
    return _create(32, pretrained, **kwargs)


__all__ = ["TINYRES", "tinyres_cfg", "vhrfm_tinyres16", "vhrfm_tinyres24", "vhrfm_tinyres32"]
