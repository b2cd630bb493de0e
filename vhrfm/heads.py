"""Dense heads on any encoder of :mod:`vhrfm.models`: multi-scale features and a light FPN-style decoder.

For a timm convolutional encoder the feature maps of every stage listed in timm's ``feature_info``
are taken with forward hooks; for the ViT the patch-token map is the single scale. The decoder projects
each scale to a common width, upsamples and sums them (feature pyramid, Lin et al., CVPR 2017), and
predicts per-pixel logits at the input resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vhrfm.models import AnyBandConvNet, AnyBandViT


def pyramid_channels(encoder) -> list[int]:
    if isinstance(encoder, AnyBandConvNet):
        return [f["num_chs"] for f in encoder.body.feature_info]
    return [encoder.embed_dim]


def feature_pyramid(encoder, x, wavelengths, gsd, widths=None) -> list[torch.Tensor]:
    """Feature maps from fine to coarse."""
    if isinstance(encoder, AnyBandViT):
        return [encoder.forward_features(x, wavelengths, gsd, widths)]
    store: list[torch.Tensor] = []
    hooks = [encoder.body.get_submodule(f["module"]).register_forward_hook(lambda _m, _i, o: store.append(o))
             for f in encoder.body.feature_info]
    try:
        encoder.forward_features(x, wavelengths, gsd, widths)
    finally:
        for h in hooks:
            h.remove()
    return store


class DenseHead(nn.Module):
    def __init__(self, in_channels: list[int], width: int = 64, out_channels: int = 1):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(c, width, 1) for c in in_channels])
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        target = feats[0].shape[-2:]
        y = sum(F.interpolate(lat(f), size=target, mode="bilinear", align_corners=False) if f.shape[-2:] != target else lat(f)
                for lat, f in zip(self.lateral, feats))
        return F.interpolate(self.out(self.fuse(y)), size=size, mode="bilinear", align_corners=False)


class Segmenter(nn.Module):
    """Encoder + dense head; ``freeze_encoder`` keeps the encoder's weights (and BN statistics) fixed."""

    def __init__(self, encoder, out_channels: int = 1, width: int = 64, freeze_encoder: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = DenseHead(pyramid_channels(encoder), width, out_channels)
        self.frozen = freeze_encoder
        if freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x, wavelengths, gsd, widths=None) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            feats = feature_pyramid(self.encoder, x, wavelengths, gsd, widths)
        return self.head(feats, x.shape[-2:])


class SMPUNet(nn.Module):
    """segmentation-models-pytorch U-Net trained from scratch, behind the same call signature (metadata ignored)."""

    def __init__(self, in_channels: int, encoder_name: str = "resnet18", out_channels: int = 1):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.Unet(encoder_name, encoder_weights=None, in_channels=in_channels, classes=out_channels)

    def forward(self, x, wavelengths=None, gsd=None, widths=None) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        y = self.net(F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x)
        return y[..., :h, :w]


TEACHER_MODELS = ("teacher_frozen", "teacher_finetuned")
STUDENT_MODELS = ("student_scratch", "student_finetuned", "student_taskkd")
DENSE_MODELS = ("unet_scratch", *TEACHER_MODELS, *STUDENT_MODELS)
FROM_SCRATCH = ("unet_scratch", "student_scratch")  # no pretrained weights anywhere in the model


def encoder_lr_scale(name: str, scale: float) -> float:
    """The encoder's learning-rate factor for model ``name``: ``scale`` (the profile's ``encoder_lr_scale``) slows
    fine-tuning of *pretrained* encoder weights; a model trained from scratch has none to keep, so its encoder
    learns at the full rate like the rest of the network (as the U-Net from scratch always did)."""
    if name not in DENSE_MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {DENSE_MODELS}")
    return 1.0 if name in FROM_SCRATCH else float(scale)


def set_output_prior(model: nn.Module, prior: float) -> nn.Module:
    """Initialise the bias of a dense model's output layer so that every pixel starts at probability ``prior``
    (bias = log(prior / (1 - prior))): the focal-loss prior of RetinaNet (Lin et al., 2017) that CenterNet uses for
    its centre heat-maps (Zhou et al., 2019, bias -2.19 = prior 0.1). Without it a sparse heat-map starts at 0.5
    everywhere and the first steps only learn to say "no animal"."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"output prior must be a probability in (0, 1); found {prior}")
    if isinstance(model, Segmenter):
        out = model.head.out
    elif isinstance(model, SMPUNet):
        out = model.net.segmentation_head[0]
    else:
        raise TypeError(f"no known output layer in {type(model).__name__}")
    with torch.no_grad():
        out.bias.fill_(math.log(prior / (1.0 - prior)))
    return model


def build_dense_model(name: str, n_bands: int, teacher_path, seed: int, student: dict | None = None,
                      output_prior: float | None = None) -> nn.Module:
    """The learned dense models of the applications, seeded: a U-Net from scratch; the pretrained encoder at
    ``teacher_path`` with a dense head, frozen or fine-tuned; or a compact student with a dense head, fine-tuned:
    from random initialisation (``student_scratch``) or from its self-supervised KD weights (``student_finetuned``,
    and ``student_taskkd``, which is trained with the teacher's soft outputs too). ``student`` = {"arch": registry
    name, "path": the KD student's weights}. ``output_prior``: the output bias set by :func:`set_output_prior`
    (the megafauna heat-maps); None keeps the layer's default initialisation."""
    from vhrfm.checkpoint import load_encoder
    from vhrfm.models import create_encoder

    torch.manual_seed(seed)
    if name == "unet_scratch":
        model = SMPUNet(in_channels=n_bands)
    elif name in TEACHER_MODELS:
        model = Segmenter(load_encoder(teacher_path), freeze_encoder=name == "teacher_frozen")
    elif name in STUDENT_MODELS:
        if not student or "arch" not in student:
            raise ValueError(f"{name} needs student={{'arch': ..., 'path': ...}}")
        if name == "student_scratch":
            enc = create_encoder(student["arch"])
            enc.card = {"arch": student["arch"], "arch_kwargs": {}}
            model = Segmenter(enc)
        else:
            model = Segmenter(load_encoder(student["path"]))
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {DENSE_MODELS}")
    return model if output_prior is None else set_output_prior(model, output_prior)
