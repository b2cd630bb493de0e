"""The ONNX Runtime path of task models (`vhrfm predict --runtime onnx`), the light dense head, and the task-network
efficiency of chapter 2, on small synthetic networks and rasters."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vhrfm.apps.taskmodel import TaskModel, load_task_model, save_task_model
from vhrfm.cli import app
from vhrfm.distill.efficiency import flops, task_model_efficiency
from vhrfm.errors import VHRFMInputError
from vhrfm.heads import DenseHead, Segmenter, SMPUNet, build_dense_model
from vhrfm.models import create_encoder
from vhrfm.runtime import FixedTaskNet, OnnxNet, onnx_task_model, with_runtime

RGB_WL, RGB_WD = [665.0, 560.0, 492.0], [30.0, 35.0, 65.0]


def _card(**kw):
    return {"task": "wildfire", "name": "net", "bands": ["b04", "b03", "b02"], "wavelengths": RGB_WL, "widths": RGB_WD,
            "gsd_m": 2.0, "tile_size": 64, "norm": {"mean": [100.0] * 3, "std": [50.0] * 3}, "threshold": 0.5, **kw}


def _segmenter(width=16, skip_levels=0, arch="mobilenetv3_small_anyband"):
    torch.manual_seed(0)
    return Segmenter(create_encoder(arch), width=width, skip_levels=skip_levels).eval()


def _raw(n=3, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("net", [_segmenter(), _segmenter(width=8, skip_levels=1), SMPUNet(in_channels=3).eval()],
                         ids=["segmenter", "light_head", "unet"])
def test_onnx_probabilities_match_torch(net):
    m = TaskModel(_card(kind="segmenter"), net)
    o = onnx_task_model(m)
    raw = _raw()
    valid = np.ones((3, 64, 64), bool)
    valid[0, :10] = False
    want = m.probs(raw, valid=valid)
    got = o.probs(raw, valid=valid)
    assert got.shape == want.shape == (3, 64, 64)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(want - 0.5).max() > 1e-3  # the nets do not output a constant: the match means something


def test_onnx_graphs_are_exported_once_per_tile_shape_band_set_and_gsd():
    o = OnnxNet(_segmenter())
    wl, wd = torch.tensor(RGB_WL), torch.tensor(RGB_WD)
    x = torch.randn(2, 3, 64, 64)
    o(x, wl, torch.full((2,), 2.0), wd)
    o(torch.randn(5, 3, 64, 64), wl, torch.full((5,), 2.0), wd)  # another batch size: the batch axis is dynamic
    assert o.exports == 1
    o(torch.randn(1, 3, 32, 32), wl, torch.full((1,), 2.0), wd)  # another tile
    assert o.exports == 2
    y_other_bands = o(x, torch.tensor([842.0, 665.0, 560.0]), torch.full((2,), 2.0), torch.tensor([115.0, 30.0, 35.0]))
    assert o.exports == 3
    with torch.no_grad():
        want = o.net(x, torch.tensor([842.0, 665.0, 560.0]), torch.full((2,), 2.0), torch.tensor([115.0, 30.0, 35.0]))
    torch.testing.assert_close(y_other_bands, want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one GSD per batch"):
        o(x, wl, torch.tensor([2.0, 0.5]), wd)
    with pytest.raises(ValueError, match="band widths"):
        o(x, wl, torch.full((2,), 2.0), None)


def test_onnx_model_follows_another_sensor_through_for_bands():
    m = onnx_task_model(TaskModel(_card(kind="segmenter"), _segmenter()))
    nir = m.for_bands(["nir", "red", "green"], [842.0, 665.0, 560.0], [115.0, 30.0, 35.0], [90.0] * 3, [40.0] * 3)
    plain = TaskModel(_card(kind="segmenter"), _segmenter()).for_bands(["nir", "red", "green"], [842.0, 665.0, 560.0],
                                                                      [115.0, 30.0, 35.0], [90.0] * 3, [40.0] * 3)
    np.testing.assert_allclose(nir.probs(_raw(2)), plain.probs(_raw(2)), atol=1e-4)


def test_runtime_choice_and_classical_rules():
    m = TaskModel(_card(kind="segmenter"), _segmenter())
    assert with_runtime(m, "torch") is m
    assert isinstance(with_runtime(m, "onnx").net, OnnxNet)
    rule = TaskModel(_card(kind="classical", classical={"type": "index", "index": "brightness", "range": [0, 1]}))
    assert onnx_task_model(rule) is rule  # no network to export: the rule runs as it is
    with pytest.raises(VHRFMInputError, match="unknown runtime"):
        with_runtime(m, "tensorrt")


def test_cli_predict_onnx_runtime_writes_the_torch_mask(tmp_path, monkeypatch):
    import rasterio
    from rasterio.transform import from_origin

    net = _segmenter()
    card = save_task_model(tmp_path / "seg", net, _card(kind="segmenter", encoder={"arch": "mobilenetv3_small_anyband",
                                                                                  "arch_kwargs": {}}, head_width=16))
    arr = np.random.default_rng(1).integers(20, 230, (3, 90, 77)).astype(np.uint8)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=77, height=90, count=3, dtype="uint8",
                       crs="EPSG:32628", transform=from_origin(400000, 3100000, 2.0, 2.0)) as dst:
        dst.write(arr)
    onnx_calls = []
    real_call = OnnxNet.__call__
    monkeypatch.setattr(OnnxNet, "__call__", lambda self, *a, **k: onnx_calls.append(1) or real_call(self, *a, **k))
    outs, calls = {}, {}
    for rt in ("torch", "onnx"):
        n0 = len(onnx_calls)
        r = CliRunner().invoke(app, ["predict", str(tmp_path / "scene.tif"), "-o", str(tmp_path / rt), "--model",
                                     str(card), "--tile", "64", "--batch-size", "2", "--runtime", rt, "--quiet", "--no-map"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output.splitlines()[0])["runtime"] == rt
        with rasterio.open(tmp_path / rt / "scene_prob.tif") as src:
            outs[rt] = src.read(1)
        calls[rt] = len(onnx_calls) - n0
    assert calls["torch"] == 0 and calls["onnx"] >= 2  # 90 x 77 px in 64 px windows, 2 a batch: every batch through ONNX
    np.testing.assert_allclose(outs["onnx"], outs["torch"], atol=1e-4)
    assert outs["torch"].std() > 1e-4
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "scene.tif"), "-o", str(tmp_path / "bad"), "--model",
                                 str(card), "--runtime", "tensorrt"])
    assert isinstance(r.exception, VHRFMInputError) and not (tmp_path / "bad").exists()


def test_test_time_augmentation_averages_the_eight_views_in_either_runtime(d4_reference):
    m = TaskModel(_card(kind="segmenter"), _segmenter())
    t = replace(m, tta=True)
    raw, valid = _raw(), np.ones((3, 64, 64), bool)
    valid[0, :10] = False
    plain, got = m.probs(raw, valid=valid), t.probs(raw, valid=valid)
    np.testing.assert_allclose(got, d4_reference(lambda r, v: m.probs(r, valid=v), raw, valid), atol=1e-6)
    assert np.abs(got - plain).max() > 1e-4  # the net is not D4-equivariant: the mean is not the plain prediction
    o = onnx_task_model(t)
    assert o.tta and isinstance(o.net, OnnxNet)
    np.testing.assert_allclose(o.probs(raw, valid=valid), got, atol=1e-4)
    other = ["nir", "red", "green"], [842.0, 665.0, 560.0], [115.0, 30.0, 35.0], [90.0] * 3, [40.0] * 3
    assert t.for_bands(*other).tta and not m.for_bands(*other).tta
    rule = TaskModel(_card(kind="classical", classical={"type": "index", "index": "darkness", "range": [-250, 0]}))
    assert rule.probs(raw).std() > 0.01
    np.testing.assert_array_equal(replace(rule, tta=True).probs(raw), rule.probs(raw))  # a rule is left as it is


def test_cli_predict_tta_maps_the_scene_with_the_averaged_model(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from vhrfm.apps.scene import predict_array

    card = save_task_model(tmp_path / "seg", _segmenter(), _card(kind="segmenter", head_width=16,
                                                                 encoder={"arch": "mobilenetv3_small_anyband",
                                                                          "arch_kwargs": {}}))
    arr = np.random.default_rng(2).integers(20, 230, (3, 90, 77)).astype(np.uint8)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=77, height=90, count=3, dtype="uint8",
                       crs="EPSG:32628", transform=from_origin(400000, 3100000, 2.0, 2.0)) as dst:
        dst.write(arr)
    probs, summaries = {}, {}
    for flag in ([], ["--tta"]):
        out = tmp_path / ("tta" if flag else "plain")
        r = CliRunner().invoke(app, ["predict", str(tmp_path / "scene.tif"), "-o", str(out), "--model", str(card),
                                     "--tile", "64", "--batch-size", "2", "--quiet", "--no-map", *flag])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output.splitlines()[0])["tta"] is bool(flag)
        summaries[bool(flag)] = json.loads((out / "scene_summary.json").read_text())
        with rasterio.open(out / "scene_prob.tif") as src:
            probs[bool(flag)] = src.read(1)
    assert summaries[True]["tta"] is True and summaries[False]["tta"] is False
    want = predict_array(replace(load_task_model(card), tta=True), arr.astype(np.float32), 2.0, tile=64, batch_size=2)
    np.testing.assert_allclose(probs[True], want, atol=1e-6)
    assert np.abs(probs[True] - probs[False]).max() > 1e-4


def test_light_head_fuses_at_a_coarser_level_and_round_trips(tmp_path):
    enc = create_encoder("mobilenetv3_small_anyband")
    x = torch.randn(1, 3, 64, 64)
    full, light = Segmenter(enc, width=32).eval(), Segmenter(enc, width=32, skip_levels=1).eval()
    assert len(light.head.lateral) == len(full.head.lateral) - 1
    wl, wd = torch.tensor(RGB_WL), torch.tensor(RGB_WD)
    assert light(x, wl, torch.ones(1), wd).shape == (1, 1, 64, 64)
    f_full = flops(FixedTaskNet(full, RGB_WL, RGB_WD, 2.0), x)
    f_light = flops(FixedTaskNet(light, RGB_WL, RGB_WD, 2.0), x)
    # the two 3x3 convolutions of width 32 at stride 2 (32 x 32 here) against stride 4: four times fewer positions
    fuse = 2 * 2 * (32 * 32 * 9) * (32 * 32)
    assert f_full - f_light > 0.75 * fuse * 0.9
    with pytest.raises(ValueError, match="skip_levels"):
        DenseHead([16, 24], skip_levels=2)
    with pytest.raises(ValueError, match="fpn decoder only"):
        Segmenter(enc, decoder="unet", skip_levels=1)
    card = _card(kind="segmenter", encoder={"arch": "mobilenetv3_small_anyband", "arch_kwargs": {}}, head_width=32,
                 head_skip_levels=1)
    m = load_task_model(save_task_model(tmp_path / "light", light, card))
    assert m.net.head.skip_levels == 1
    raw = _raw(2)
    np.testing.assert_allclose(m.probs(raw), TaskModel(card, light).probs(raw), atol=1e-6)


def test_students_take_the_head_settings_of_the_profile():
    from vhrfm.config import load_profile
    from vhrfm.distill.task import student_spec

    for profile in ("smoke", "cpu", "gpu"):  # the light head for burned areas; animals keep the stride-2 head, narrower
        cfg = load_profile(profile)
        assert student_spec(profile, cfg["wildfire"])["head"] == {"width": 32, "skip_levels": 1}, profile
        assert student_spec(profile, cfg["megafauna"])["head"] == {"width": 32}, profile
    student = {"arch": "mobilenetv3_small_anyband", "path": None, "head": {"width": 24, "skip_levels": 1}}
    m = build_dense_model("student_scratch", 3, None, seed=0, student=student)
    assert m.head.out.in_channels == 24 and m.head.skip_levels == 1
    m = build_dense_model("student_scratch", 3, None, seed=0, student={**student, "head": {}})
    assert m.head.out.in_channels == 64 and m.head.skip_levels == 0


def test_task_model_efficiency_reports_each_network_against_the_reference():
    big = TaskModel(_card(kind="segmenter"), _segmenter(width=64, arch="resnet18_anyband"))
    small = TaskModel(_card(kind="segmenter"), _segmenter(width=8, skip_levels=1))
    wide = TaskModel(_card(kind="segmenter"), _segmenter(width=64))  # the same student encoder, the full head
    out = task_model_efficiency({"teacher": big, "student": small, "wide": wide}, "teacher", size=32, rounds=3)
    t, s, w = (out["models"][k] for k in ("teacher", "student", "wide"))
    assert out["input"] == [3, 32, 32] and out["reference"] == "teacher"
    assert "speedup_torch" not in t and "speedup_onnx_vs_torch" in t
    for k in ("speedup_torch", "speedup_onnx", "speedup_onnx_vs_torch"):
        assert s[k] > 0 and s[f"{k}_iqr"][0] <= s[k] <= s[f"{k}_iqr"][1]
    assert s["flops_per_image"] < w["flops_per_image"] < t["flops_per_image"] and s["params"] < t["params"]
    assert s["head"] == {"decoder": "fpn", "width": 8, "skip_levels": 1} and w["head"]["skip_levels"] == 0
    # one encoder under a lighter head: the encoder's share of the FLOPs grows
    assert 0 < w["encoder_flops_share"] < s["encoder_flops_share"] < 1
    other = TaskModel(_card(kind="segmenter", bands=["b08", "b04", "b03"]), _segmenter())
    with pytest.raises(ValueError, match="differ"):
        task_model_efficiency({"teacher": big, "student": other}, "teacher", size=32, rounds=1)
