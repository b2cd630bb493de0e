"""The narrow residual students (vhrfm.models.tinyres): timm networks of the registry, with the pyramid the dense heads
read, inside the distillation goal's size limits, and built from dense convolutions only (what they are for)."""

import pytest
import timm
import torch
from torch import nn

from vhrfm.heads import Segmenter, feature_pyramid
from vhrfm.models import create_encoder
from vhrfm.models.tinyres import TINYRES, tinyres_cfg

WL, WD = torch.tensor([490.0, 560.0, 665.0, 842.0]), torch.tensor([60.0, 60.0, 30.0, 100.0])


@pytest.mark.parametrize("width", sorted(TINYRES))
def test_registered_in_timm_with_the_configured_widths(width):
    net = timm.create_model(f"vhrfm_tinyres{width}", num_classes=0)
    chs, _ = TINYRES[width]
    assert [f["reduction"] for f in net.feature_info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in net.feature_info] == [width, *chs]  # the stem, then each stage
    assert net.num_features == chs[-1]
    out = net(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, chs[-1])
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(f"vhrfm_tinyres{width}", pretrained=True)
    with pytest.raises(ValueError, match="width"):
        tinyres_cfg(width + 1)


def test_no_depthwise_convolution_and_within_the_goals_parameter_count():
    enc = create_encoder("tinyres16_anyband")
    convs = [m for m in enc.body.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.groups == 1 for m in convs)
    # the distillation goal: <= 2 M parameters (the any-band stem's weight generator included)
    assert sum(p.numel() for p in enc.parameters()) < 2_000_000
    mobile = create_encoder("mobilenetv3_small_anyband")
    n_ops = lambda e: sum(1 for m in e.body.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)))  # noqa: E731
    assert n_ops(enc) < n_ops(mobile) / 2  # fewer, denser operations: the design's point


def test_any_band_pyramid_and_dense_head():
    torch.manual_seed(0)
    enc = create_encoder("tinyres16_anyband").eval()
    x = torch.randn(2, 4, 96, 96)
    feats = feature_pyramid(enc, x, WL, 0.5, WD)
    assert [f.shape[-1] for f in feats] == [48, 24, 12, 6, 3]
    net = Segmenter(enc, width=16).eval()
    with torch.no_grad():
        y = net(x, WL, torch.tensor(0.5), WD)
        y3 = net(x[:, :3], WL[:3], torch.tensor(0.5), WD[:3])
    assert y.shape == (2, 1, 96, 96) and y3.shape == (2, 1, 96, 96)
    assert not torch.allclose(y, y3)  # the bands reach the output
