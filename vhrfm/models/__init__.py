"""Encoders created by name: ``create_encoder("vit_tiny_p8")``; every one accepts any band set.

Uniform interface: ``forward_features(x, wavelengths, gsd, widths=None)`` -> spatial (B, D, h, w);
``forward(...)`` -> pooled (B, D). ``wavelengths``/``widths`` in nm, one per band of ``x``; ``gsd`` in m.
"""

from __future__ import annotations

from vhrfm.errors import VHRFMInputError
from vhrfm.models import tinyres  # noqa: F401  (registers the vhrfm_tinyres timm networks)
from vhrfm.models.conv import AnyBandConvNet
from vhrfm.models.vit import AnyBandViT

ENCODERS = {
    # name: (class, kwargs)
    "vit_nano_p8": (AnyBandViT, dict(embed_dim=128, depth=4, num_heads=4, patch_size=8)),
    "vit_tiny_p8": (AnyBandViT, dict(embed_dim=192, depth=12, num_heads=3, patch_size=8)),
    "vit_small_p8": (AnyBandViT, dict(embed_dim=384, depth=12, num_heads=6, patch_size=8)),
    "vit_base_p8": (AnyBandViT, dict(embed_dim=768, depth=12, num_heads=12, patch_size=8)),
    "resnet18_anyband": (AnyBandConvNet, dict(timm_name="resnet18")),
    "resnet50_anyband": (AnyBandConvNet, dict(timm_name="resnet50")),
    "convnext_atto_anyband": (AnyBandConvNet, dict(timm_name="convnext_atto")),
    "mobilenetv3_small_anyband": (AnyBandConvNet, dict(timm_name="mobilenetv3_small_100")),
    "efficientnet_b0_anyband": (AnyBandConvNet, dict(timm_name="efficientnet_b0")),
    # narrow residual networks built for batch-one CPU latency (vhrfm.models.tinyres)
    "tinyres16_anyband": (AnyBandConvNet, dict(timm_name="vhrfm_tinyres16")),
}


def list_encoders() -> list[str]:
    return sorted(ENCODERS)


def encoder_config(name: str, **overrides) -> dict:
    if name not in ENCODERS:
        raise VHRFMInputError("unknown encoder", expected=list_encoders(), found=name)
    return {**ENCODERS[name][1], **overrides}


def create_encoder(name: str, **overrides):
    cls, _ = ENCODERS.get(name, (None, None))
    kw = encoder_config(name, **overrides)
    return cls(**kw)


def spectral_stem(encoder):
    """The first layer of an any-band encoder: its :class:`SpectralConv` (a plain convolution after :func:`fix_bands`)."""
    if isinstance(encoder, AnyBandViT):
        return encoder.patch_embed
    if isinstance(encoder, AnyBandConvNet):
        return getattr(encoder.stem, "conv", encoder.stem)  # after fix_bands the slot is a plain convolution
    raise TypeError(f"not an any-band encoder: {type(encoder).__name__}")


def stem_colour_correlation(encoder, wavelengths, widths=None) -> float:
    """Mean off-diagonal correlation of the stem's per-band kernels for one band set (see
    :func:`vhrfm.models.spectral.band_kernel_correlation`): 1 = colour-blind, 0 = bands filtered independently."""
    import torch

    from vhrfm.models.spectral import SpectralConv, band_kernel_correlation

    stem = spectral_stem(encoder)
    if not isinstance(stem, SpectralConv):
        raise TypeError("the stem is fixed to one band set (fix_bands); use the any-band encoder")
    c = len(wavelengths)
    if c < 2:
        raise ValueError("need at least two bands")
    corr = band_kernel_correlation(stem, wavelengths, widths)
    return float((corr.sum() - torch.diagonal(corr).sum()) / (c * (c - 1)))


def fix_bands(encoder, wavelengths, widths=None):
    """A copy of ``encoder`` whose spectral stem is frozen to one band set (plain convolution weights): the same
    outputs for that band set, exportable to ONNX; the copy ignores the band metadata it is given."""
    import copy

    enc = copy.deepcopy(encoder).eval()
    if isinstance(enc, AnyBandViT):
        enc.patch_embed = enc.patch_embed.fixed(wavelengths, widths)
    elif isinstance(enc, AnyBandConvNet):
        name = enc._stem_name
        parent = enc.body.get_submodule(name.rsplit(".", 1)[0]) if "." in name else enc.body
        setattr(parent, name.rsplit(".", 1)[-1], enc.stem.conv.fixed(wavelengths, widths))
    else:
        raise TypeError(f"not an any-band encoder: {type(encoder).__name__}")
    return enc


__all__ = ["fix_bands", "spectral_stem", "stem_colour_correlation", "AnyBandViT", "AnyBandConvNet", "create_encoder", "list_encoders", "encoder_config", "ENCODERS"]
