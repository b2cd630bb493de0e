import json

import pytest

from vhrfm.bench import bench_io, run_io


def test_io_benchmark_reports_both_throughputs_and_their_ratio(make_raster, tmp_path):
    path, _ = make_raster(count=2, height=300, width=280)
    r = bench_io(path, tile=128, overlap=16, repeats=1)
    assert r["full_read_mpx_s"] > 0 and r["tiled_mpx_s"] > 0
    assert abs(r["ratio_tiled_vs_full"] / (r["full_read_s"] / r["tiled_read_normalise_s"]) - 1) < 0.02
    out = run_io(tmp_path / "bench", files=[path], repeats=1)
    data = json.loads(out.read_text())
    assert data["benchmark"] == "io" and data["machine"]["cpu_count"] >= 1 and len(data["results"]) == 1


def test_pretrain_benchmark_compares_loop_with_bare_loop():
    import numpy as np

    from vhrfm.bench import bench_pretrain
    from vhrfm.ssl.corpus import Corpus

    rng = np.random.default_rng(0)
    corpus = Corpus.from_arrays({"ms": (rng.normal(size=(8, 3, 40, 40)), [480, 560, 660], [60, 70, 60], 1.0)})
    cfg = dict(encoder="vit_nano_p8", mask_ratio=0.75, decoder_dim=32, decoder_depth=1, texture_weight=0.5, tau=0.2,
               momentum=0.99, contrastive_weight=1.0, crop=32, scale=[0.8, 1.2], band_drop=0.0, jitter=0.0,
               batch_size=4, lr=1e-3, weight_decay=0.05, clip_grad=1.0)
    for objective in ("mae", "contrastive"):  # one-view and two-view objectives, on the device pretrain() uses
        r = bench_pretrain(corpus, cfg, steps=2, warmup=1, objective=objective)
        assert r["objective"] == objective and r["device"] in ("cpu", "cuda")
        assert r["ours_images_per_s"] > 0 and r["bare_images_per_s"] > 0
        assert abs(r["ratio_ours_vs_bare"] / (r["ours_images_per_s"] / r["bare_images_per_s"]) - 1) < 0.02


def test_scene_benchmark_measures_ratio_and_rss(tmp_path):
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from vhrfm.apps.taskmodel import save_task_model
    from vhrfm.apps.wildfire import ClassicalIndex
    from vhrfm.bench import bench_scene

    clf = ClassicalIndex([100.0] * 3, [50.0] * 3)
    clf.name, clf.range = "darkness", (-200.0, -50.0)
    card = save_task_model(tmp_path / "m", clf, {"kind": "classical", "task": "wildfire", "bands": ["r", "g", "b"],
                                                  "wavelengths": [665.0, 560.0, 492.0], "widths": [30.0, 35.0, 65.0],
                                                  "gsd_m": 2.0, "norm": {"mean": [100.0] * 3, "std": [50.0] * 3},
                                                  "threshold": 0.5})
    # large enough that the index's own time is measurable against the whole run's (at 100 x 90 pixels it was
    # under 0.5 ms on a fast CPU; the scene summary then rounded it to 0 ms, it now keeps 4 significant digits)
    arr = np.random.default_rng(0).integers(0, 255, (3, 300, 270)).astype(np.uint8)
    scene = tmp_path / "s.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=270, height=300, count=3, dtype="uint8", crs="EPSG:32628",
                       transform=from_origin(4e5, 3.1e6, 2, 2)) as dst:
        dst.write(arr)
    r = bench_scene(card, scene, reps=(1, 2), tile=64, overlap=8)
    assert [x["width"] for x in r] == [270, 540] and [x["height"] for x in r] == [300, 600]
    for x in r:
        assert x["peak_rss_mb"] > 0 and 0 < x["model_only_s"] and x["end_to_end_s"] > 0
        assert abs(x["ratio_end_to_end_vs_model"] / (x["end_to_end_mpx_s"] / x["model_only_mpx_s"]) - 1) < 0.05
        assert 0 < x["ratio_end_to_end_vs_model_in_run"] <= 1 and x["warmup_batch_s"] > 0
        assert x["ratio_end_to_end_vs_model_in_run"] == pytest.approx(x["timing_s"]["model_s"] / x["end_to_end_s"], rel=0.02, abs=0.01)


def test_scene_benchmark_runs_a_network_in_either_runtime(tmp_path):
    import numpy as np
    import rasterio
    import torch
    from rasterio.transform import from_origin

    from vhrfm.apps.taskmodel import save_task_model
    from vhrfm.bench import bench_scene
    from vhrfm.heads import Segmenter
    from vhrfm.models import create_encoder

    torch.manual_seed(0)
    net = Segmenter(create_encoder("mobilenetv3_small_anyband"), width=8, skip_levels=1)
    card = save_task_model(tmp_path / "m", net, {"kind": "segmenter", "task": "wildfire", "bands": ["r", "g", "b"],
                                                 "wavelengths": [665.0, 560.0, 492.0], "widths": [30.0, 35.0, 65.0],
                                                 "gsd_m": 2.0, "norm": {"mean": [100.0] * 3, "std": [50.0] * 3},
                                                 "threshold": 0.5, "head_width": 8, "head_skip_levels": 1,
                                                 "encoder": {"arch": "mobilenetv3_small_anyband", "arch_kwargs": {}}})
    arr = np.random.default_rng(0).integers(0, 255, (3, 70, 60)).astype(np.uint8)
    scene = tmp_path / "s.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=60, height=70, count=3, dtype="uint8", crs="EPSG:32628",
                       transform=from_origin(4e5, 3.1e6, 2, 2)) as dst:
        dst.write(arr)
    runs = {rt: bench_scene(card, scene, reps=(1,), tile=64, overlap=8, runtime=rt)[0] for rt in ("torch", "onnx")}
    for rt, r in runs.items():
        assert r["runtime"] == rt and r["tiles"] == runs["torch"]["tiles"] and r["end_to_end_s"] > 0
    assert runs["torch"]["network"] == "Segmenter" and runs["onnx"]["network"] == "OnnxNet"  # what the child ran
    with pytest.raises(ValueError, match="unknown runtime"):
        bench_scene(card, scene, reps=(1,), tile=64, overlap=8, runtime="tensorrt")


def test_real_windows_are_standardised_per_band_and_drawn_from_every_file(make_raster):
    import numpy as np

    from vhrfm.distill.efficiency import real_windows

    a, _ = make_raster("a.tif", count=3, height=80, width=90, seed=1)
    b, _ = make_raster("b.tif", count=3, height=70, width=70, seed=2, fill=7)  # constant: its windows are all equal
    x = real_windows([a, b], n=6, size=32, seed=0)
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-3)
    odd = x[1::2].transpose(1, 0, 2, 3).reshape(3, -1)  # odd windows: from the constant file, one value per band
    assert np.ptp(odd, axis=1).max() == 0 and np.ptp(x[0::2]) > 0


def test_quant_benchmark_static_int8_keeps_features_and_reports_paired_speedups():
    import numpy as np
    import torch

    from vhrfm.bench import bench_quant
    from vhrfm.models import create_encoder

    torch.manual_seed(0)
    encs = {"teacher": create_encoder("resnet18_anyband").eval(), "small": create_encoder("mobilenetv3_small_anyband").eval()}
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(4, 3, 64, 64)).astype(np.float32)
    evaluation = rng.normal(size=(3, 3, 64, 64)).astype(np.float32)
    r = bench_quant(encs, "teacher", [665.0, 560.0, 490.0], [30.0, 35.0, 65.0], 0.5, calib, evaluation, rounds=2,
                    min_block_s=0.0, settle_s=0.0, progress=False)
    assert r["reference"] == "teacher" and r["input"] == [3, 64, 64]
    for name, row in r["models"].items():
        assert row["fp32"]["cosine_to_torch"] > 0.9999
        for prec in ("int8_dynamic", "int8_static"):
            assert row[prec]["size_mb"] < 0.5 * row["fp32"]["size_mb"]  # int8 weights: about a quarter of fp32
            assert 0.95 < row[prec]["cosine_to_torch"] <= 1.0
            assert row[prec]["speedup_vs_own_fp32"] > 0 and len(row[prec]["speedup_vs_own_fp32_iqr"]) == 2
            assert ("speedup_vs_reference" in row[prec]) == (name != "teacher")
    small, teacher = r["models"]["small"], r["models"]["teacher"]
    assert set(small) >= {"fp32", "int8_dynamic", "int8_static"}
    for row in (small, teacher):  # the fastest precision among those keeping the features
        kept = [p for p in ("fp32", "int8_dynamic", "int8_static") if row[p]["cosine_to_torch"] >= r["min_cosine"]]
        assert row["fastest"] in kept and row[row["fastest"]]["latency_ms"] == min(row[p]["latency_ms"] for p in kept)
    assert small["speedup_fastest_vs_reference_fastest"] > 0 and "speedup_fastest_vs_reference_fastest" not in teacher


def test_static_quantisation_writes_integer_convolutions(tmp_path):
    import numpy as np
    import onnx
    import torch

    from vhrfm.distill.efficiency import FixedBands, export_onnx, quantize_int8, quantize_static_int8
    from vhrfm.models import create_encoder

    torch.manual_seed(0)
    model = FixedBands(create_encoder("mobilenetv3_small_anyband").eval(), [665.0, 560.0, 490.0], [30.0, 35.0, 65.0], 0.5).eval()
    x = torch.randn(1, 3, 64, 64)
    fp32 = export_onnx(model, x, tmp_path / "m.onnx")
    calib = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    ops = lambda p: {n.op_type for n in onnx.load(str(p)).graph.node}  # noqa: E731
    static = ops(quantize_static_int8(fp32, tmp_path / "s.onnx", calib))
    dynamic = ops(quantize_int8(fp32, tmp_path / "d.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= static and "DynamicQuantizeLinear" not in static
    assert "DynamicQuantizeLinear" in dynamic
    assert not list(tmp_path.glob("*.plain.onnx")) and not list(tmp_path.glob("*.pre.onnx"))  # temporaries removed
