"""The U-Net decoder on an any-band encoder (``teacher_unet``): shapes, the same decoder as the U-Net from
scratch, the output prior, and a task-model card that rebuilds it."""

import numpy as np
import pytest
import torch

from vhrfm.apps.taskmodel import encoder_card, load_task_model, save_task_model
from vhrfm.heads import (SMPUNet, TEACHER_MODELS, Segmenter, UNetHead, set_output_prior, unet_pyramid)
from vhrfm.models import create_encoder

WL, WD = torch.tensor([660.0, 560.0, 490.0]), torch.tensor([30.0, 35.0, 65.0])


@pytest.mark.parametrize("arch", ["resnet18_anyband", "mobilenetv3_small_anyband", "vit_nano_p8"])
@pytest.mark.parametrize("hw", [(64, 64), (72, 40)])
def test_unet_decoder_predicts_at_the_input_resolution(arch, hw):
    torch.manual_seed(0)
    model = Segmenter(create_encoder(arch), decoder="unet").eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, *hw), WL, torch.full((2,), 0.5), WD)
    assert y.shape == (2, 1, *hw)
    assert isinstance(model.head, UNetHead) and model.decoder == "unet"


def test_the_decoder_is_the_one_of_the_unet_from_scratch():
    """Same smp decoder blocks (shapes of every weight) on a ResNet-18 pyramid as smp's own U-Net with resnet18."""
    ours = Segmenter(create_encoder("resnet18_anyband"), decoder="unet").head.decoder.state_dict()
    smp = SMPUNet(in_channels=3).net.decoder.state_dict()
    assert list(ours) == list(smp)
    assert all(ours[k].shape == smp[k].shape for k in ours)


def test_a_single_scale_map_becomes_a_five_level_pyramid_and_a_pyramid_is_kept():
    f = torch.randn(1, 8, 8, 8)  # a ViT p8 token map of a 64 px input
    levels = unet_pyramid([f], (64, 64))
    assert [t.shape[-1] for t in levels] == [32, 16, 8, 4, 2]
    feats = [torch.randn(1, 4, 32, 32), torch.randn(1, 4, 16, 16)]
    assert unet_pyramid(feats, (64, 64)) is feats


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="decoder"):
        Segmenter(create_encoder("resnet18_anyband"), decoder="deeplab")


def test_output_prior_on_the_unet_decoder():
    model = set_output_prior(Segmenter(create_encoder("mobilenetv3_small_anyband"), decoder="unet"), 0.1)
    assert torch.allclose(torch.sigmoid(model.head.out.bias), torch.tensor([0.1]), atol=1e-6)
    assert "teacher_unet" in TEACHER_MODELS


def test_card_rebuilds_the_unet_decoder(tmp_path):
    torch.manual_seed(0)
    net = Segmenter(create_encoder("resnet18_anyband"), decoder="unet")
    net.encoder.card = {"arch": "resnet18_anyband", "arch_kwargs": {}}
    card = {"task": "wildfire", "kind": "segmenter", "bands": ["red", "green", "blue"], "wavelengths": WL.tolist(),
            "widths": WD.tolist(), "gsd_m": 10.0, "norm": {"mean": [100.0] * 3, "std": [50.0] * 3}, "threshold": 0.5,
            **encoder_card("teacher_unet", net)}
    assert card["dense_decoder"] == "unet" and card["encoder"]["pretrained"] == "teacher"
    m = load_task_model(save_task_model(tmp_path / "tu", net, card))
    assert m.net.decoder == "unet"
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        direct = torch.sigmoid(net.eval()(torch.from_numpy((x - 100) / 50), WL, torch.full((2,), 10.0), WD)[:, 0]).numpy()
    np.testing.assert_allclose(m.probs(x), direct, atol=1e-5)


def test_the_random_twin_of_teacher_unet_has_its_architecture_and_no_pretrained_weights(tmp_path):
    from vhrfm.checkpoint import save_encoder
    from vhrfm.heads import FROM_SCRATCH, build_dense_model, encoder_lr_scale

    torch.manual_seed(1)
    enc = create_encoder("resnet18_anyband")
    path = save_encoder(enc, tmp_path / "teacher.safetensors", {"arch": "resnet18_anyband", "arch_kwargs": {}})
    pre = build_dense_model("teacher_unet", 3, path, seed=0)
    rnd = build_dense_model("anyband_unet_scratch", 3, path, seed=0)
    a, b = pre.state_dict(), rnd.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)  # the same architecture
    conv = "encoder.body.layer1.0.conv1.weight"
    assert torch.equal(a[conv], enc.state_dict()["body.layer1.0.conv1.weight"]) and not torch.equal(a[conv], b[conv])
    assert "anyband_unet_scratch" in FROM_SCRATCH and encoder_lr_scale("anyband_unet_scratch", 0.1) == 1.0
    assert encoder_card("anyband_unet_scratch", rnd)["encoder"]["pretrained"] is None


def test_the_random_twin_depends_on_the_seed_only_not_on_the_teacher_weights(tmp_path):
    """Reading the card loads the teacher; the twin's random weights must not depend on that (nor on the teacher's
    values): two different teachers of one architecture give the same twin at one seed, another seed another twin."""
    from vhrfm.checkpoint import save_encoder
    from vhrfm.heads import build_dense_model

    paths = []
    for i in (1, 2):
        torch.manual_seed(i)
        paths.append(save_encoder(create_encoder("resnet18_anyband"), tmp_path / f"t{i}.safetensors",
                                  {"arch": "resnet18_anyband", "arch_kwargs": {}}))
    a = build_dense_model("anyband_unet_scratch", 3, paths[0], seed=0).state_dict()
    b = build_dense_model("anyband_unet_scratch", 3, paths[1], seed=0).state_dict()
    c = build_dense_model("anyband_unet_scratch", 3, paths[0], seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    torch.manual_seed(0)
    ref = create_encoder("resnet18_anyband").state_dict()  # the seed's weights, as if no card had been read
    assert all(torch.equal(a[f"encoder.{k}"], v) for k, v in ref.items())


def test_onnx_export_of_the_unet_decoder_matches_torch_at_other_sizes(tmp_path):
    import warnings

    import onnxruntime as ort

    class Fixed(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return torch.sigmoid(self.net(x, WL, torch.full((x.shape[0],), 1.0), WD))

    torch.manual_seed(0)
    model = Fixed(Segmenter(create_encoder("resnet18_anyband"), decoder="unet")).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["image"], output_names=["p"],
                          dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    model.eval()  # the exporter restores the wrapper's training flag: back to evaluation
    sess = ort.InferenceSession(str(path))
    x = torch.randn(2, 3, 100, 72)
    with torch.no_grad():
        np.testing.assert_allclose(sess.run(None, {"image": x.numpy()})[0], model(x).numpy(), atol=1e-5)
