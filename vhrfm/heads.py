"""Dense heads on any encoder of :mod:`vhrfm.models`: multi-scale features and a decoder.

For a timm convolutional encoder the feature maps of every stage listed in timm's ``feature_info``
are taken with forward hooks; for the ViT the patch-token map is the single scale. Two decoders:

- ``fpn`` (:class:`DenseHead`, light): projects each scale to a common width, upsamples and sums them (feature
  pyramid, Lin et al., CVPR 2017) and predicts per-pixel logits at the finest feature scale, upsampled bilinearly;
- ``unet`` (:class:`UNetHead`): segmentation-models-pytorch's U-Net decoder (Ronneberger et al., 2015) on the same
  pyramid, coarse to fine with a skip connection at every scale and a last block at the input resolution: the
  decoder of the U-Net trained from scratch, so a pretrained encoder and a random one can be compared with
  everything else equal.
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
    """The light dense head: 1x1 laterals of the pyramid's levels summed at the finest level kept, two 3x3
    convolutions of ``width`` channels there, a 1x1 output, upsampled to the input. ``skip_levels`` drops that many
    of the finest levels, so the fused map is coarser: for a small student at stride 2 the two 3x3 convolutions
    held 94 % of the task network's FLOPs (chapter 2's ``task_models``), at stride 4 they hold a quarter of that."""

    def __init__(self, in_channels: list[int], width: int = 64, out_channels: int = 1, skip_levels: int = 0):
        super().__init__()
        if not 0 <= skip_levels < len(in_channels):
            raise ValueError(f"skip_levels must keep at least one of the {len(in_channels)} levels; got {skip_levels}")
        self.skip_levels = skip_levels
        self.lateral = nn.ModuleList([nn.Conv2d(c, width, 1) for c in in_channels[skip_levels:]])
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        feats = feats[self.skip_levels:]
        target = feats[0].shape[-2:]
        y = sum(F.interpolate(lat(f), size=target, mode="bilinear", align_corners=False) if f.shape[-2:] != target else lat(f)
                for lat, f in zip(self.lateral, feats))
        return F.interpolate(self.out(self.fuse(y)), size=size, mode="bilinear", align_corners=False)


UNET_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # segmentation-models-pytorch's U-Net default (5 stages)


def unet_pyramid(feats: list[torch.Tensor], size: tuple[int, int], levels: int = 5) -> list[torch.Tensor]:
    """A single-scale feature map (the ViT's tokens) resampled to strides 2, 4, ... 2**levels of ``size`` (a
    parameter-free pyramid, as in ViTDet's simple feature pyramid); a multi-scale pyramid is returned unchanged."""
    if len(feats) > 1:
        return feats
    f = feats[0]
    return [F.interpolate(f, size=(max(1, size[0] // 2**k), max(1, size[1] // 2**k)), mode="bilinear",
                          align_corners=False) for k in range(1, levels + 1)]


class UNetHead(nn.Module):
    """segmentation-models-pytorch's U-Net decoder on an encoder's feature pyramid (fine to coarse), with a 3x3
    output convolution at the input resolution (``out``, as smp's segmentation head)."""

    def __init__(self, in_channels: list[int], out_channels: int = 1, single_scale: bool = False):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        chans = [in_channels[0]] * len(UNET_DECODER_CHANNELS) if single_scale else list(in_channels)
        self.single_scale = single_scale
        dec = UNET_DECODER_CHANNELS[-len(chans):]
        # smp drops the first entry (the input-resolution skip it never uses); only the decoder's output shape needs it
        self.decoder = UnetDecoder(encoder_channels=[0, *chans], decoder_channels=dec, n_blocks=len(chans))
        self.out = nn.Conv2d(dec[-1], out_channels, 3, padding=1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        feats = unet_pyramid(feats, size) if self.single_scale else feats
        stem = feats[0].new_empty((feats[0].shape[0], 0, *size))  # stands for the input: gives the output size
        return self.out(self.decoder([stem, *feats]))


DECODERS = ("fpn", "unet")


class Segmenter(nn.Module):
    """Encoder + dense head (``decoder``: one of :data:`DECODERS`; ``width`` and ``skip_levels``: the fpn head's,
    :class:`DenseHead`); ``freeze_encoder`` keeps the encoder's weights (and BN statistics) fixed."""

    def __init__(self, encoder, out_channels: int = 1, width: int = 64, freeze_encoder: bool = False,
                 decoder: str = "fpn", skip_levels: int = 0):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
        self.encoder = encoder
        self.decoder = decoder
        chans = pyramid_channels(encoder)
        if skip_levels and decoder != "fpn":
            raise ValueError("skip_levels applies to the fpn decoder only")
        self.head = DenseHead(chans, width, out_channels, skip_levels) if decoder == "fpn" else \
            UNetHead(chans, out_channels, single_scale=isinstance(encoder, AnyBandViT))
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


# teacher_unet: the teacher fine-tuned under the U-Net decoder of unet_scratch (the same decoder on a pretrained encoder)
TEACHER_MODELS = ("teacher_frozen", "teacher_finetuned", "teacher_unet")
STUDENT_MODELS = ("student_scratch", "student_finetuned", "student_taskkd")
# anyband_unet_scratch: teacher_unet's exact architecture (the teacher's encoder with its any-band stem, the U-Net
# decoder) from random weights: the control that isolates what the pretrained weights add
DENSE_MODELS = ("unet_scratch", "anyband_unet_scratch", *TEACHER_MODELS, *STUDENT_MODELS)
FROM_SCRATCH = ("unet_scratch", "anyband_unet_scratch", "student_scratch")  # no pretrained weights anywhere


def encoder_lr_scale(name: str, scale: float) -> float:
    """The encoder's learning-rate factor for model ``name``: ``scale`` (the profile's ``encoder_lr_scale``) slows
    fine-tuning of *pretrained* encoder weights; a model trained from scratch has none to keep, so its encoder
    learns at the full rate like the rest of the network (as the U-Net from scratch always did)."""
    if name not in DENSE_MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {DENSE_MODELS}")
    return 1.0 if name in FROM_SCRATCH else float(scale)


def train_steps(name: str, cfg: dict) -> int:
    """Training steps of model ``name`` under an application's settings ``cfg``: ``student_steps`` for the compact
    students of :data:`STUDENT_MODELS` where the profile sets it, ``steps`` for every other model. A student costs a
    fraction of the teacher per step, and students learn slowly: distillation trains them longer than their teacher
    ("a good teacher is patient and consistent", Beyer et al., CVPR 2022)."""
    if name not in DENSE_MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {DENSE_MODELS}")
    return int(cfg.get("student_steps", cfg["steps"]) if name in STUDENT_MODELS else cfg["steps"])


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
    """The learned dense models of the applications, seeded: a U-Net from scratch; the architecture of
    ``teacher_unet`` from random weights (``anyband_unet_scratch``; only the architecture is read from
    ``teacher_path``); the pretrained encoder at
    ``teacher_path`` with the light dense head, frozen or fine-tuned, or fine-tuned with the U-Net decoder
    (``teacher_unet``); or a compact student with a dense head, fine-tuned:
    from random initialisation (``student_scratch``) or from its self-supervised KD weights (``student_finetuned``,
    and ``student_taskkd``, which is trained with the teacher's soft outputs too). ``student`` = {"arch": registry
    name, "path": the KD student's weights, "head": optional :class:`DenseHead` settings, ``width`` and
    ``skip_levels``}. ``output_prior``: the output bias set by :func:`set_output_prior`
    (the megafauna heat-maps); None keeps the layer's default initialisation."""
    from vhrfm.checkpoint import load_encoder, read_card
    from vhrfm.models import create_encoder

    torch.manual_seed(seed)
    if name == "unet_scratch":
        model = SMPUNet(in_channels=n_bands)
    elif name == "anyband_unet_scratch":
        card = read_card(teacher_path)  # only the architecture is kept, not the weights
        enc = create_encoder(card["arch"], **card.get("arch_kwargs", {}))
        enc.card = {"arch": card["arch"], "arch_kwargs": card.get("arch_kwargs", {})}
        model = Segmenter(enc, decoder="unet")
    elif name in TEACHER_MODELS:
        model = Segmenter(load_encoder(teacher_path), freeze_encoder=name == "teacher_frozen",
                          decoder="unet" if name == "teacher_unet" else "fpn")
    elif name in STUDENT_MODELS:
        if not student or "arch" not in student:
            raise ValueError(f"{name} needs student={{'arch': ..., 'path': ...}}")
        head = {k: student.get("head", {})[k] for k in ("width", "skip_levels") if k in student.get("head", {})}
        if name == "student_scratch":
            enc = create_encoder(student["arch"])
            enc.card = {"arch": student["arch"], "arch_kwargs": {}}
            model = Segmenter(enc, **head)
        else:
            model = Segmenter(load_encoder(student["path"]), **head)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {DENSE_MODELS}")
    return model if output_prior is None else set_output_prior(model, output_prior)
