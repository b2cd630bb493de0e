"""The detectors' output prior (RetinaNet / CenterNet bias initialisation) on every dense model kind."""

import pytest
import torch

from vhrfm.heads import Segmenter, SMPUNet, build_dense_model, set_output_prior
from vhrfm.models import create_encoder


@pytest.mark.parametrize("prior", [0.1, 0.01])
def test_every_pixel_starts_at_the_prior_on_a_blank_image(prior):
    for model in (SMPUNet(in_channels=3), Segmenter(create_encoder("mobilenetv3_small_anyband"), width=8)):
        set_output_prior(model, prior)
        # the output bias alone decides the probability where the layer's input is zero: check the layer itself
        out = model.head.out if isinstance(model, Segmenter) else model.net.segmentation_head[0]
        assert torch.allclose(torch.sigmoid(out.bias), torch.full_like(out.bias, prior), atol=1e-6)
        x = torch.zeros(1, out.in_channels, 4, 4)
        assert torch.allclose(torch.sigmoid(out(x)), torch.full((1, 1, 4, 4), prior), atol=1e-6)


def test_a_sparse_heat_map_starts_low_and_the_default_is_unchanged():
    spec = {"arch": "mobilenetv3_small_anyband"}
    x, wl = torch.rand(2, 3, 64, 64), torch.tensor([660.0, 560.0, 490.0])
    with_prior = build_dense_model("student_scratch", 3, None, seed=0, student=spec, output_prior=0.1).eval()
    default = build_dense_model("student_scratch", 3, None, seed=0, student=spec).eval()
    with torch.no_grad():
        p = torch.sigmoid(with_prior(x, wl, torch.full((2,), 0.3)))
        q = torch.sigmoid(default(x, wl, torch.full((2,), 0.3)))
    assert p.mean() < 0.2 < q.mean()
    # only the output bias differs: every other weight is the same seeded initialisation
    a, b = with_prior.state_dict(), default.state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ == ["head.out.bias"]


def test_an_impossible_prior_is_refused():
    with pytest.raises(ValueError, match="probability"):
        set_output_prior(SMPUNet(in_channels=1), 1.0)
    with pytest.raises(TypeError, match="output layer"):
        set_output_prior(torch.nn.Linear(2, 2), 0.1)
