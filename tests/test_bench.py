import json

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
    r = bench_pretrain(corpus, cfg, steps=2, warmup=1)
    assert r["ours_images_per_s"] > 0 and r["bare_images_per_s"] > 0
    assert abs(r["ratio_ours_vs_bare"] / (r["ours_images_per_s"] / r["bare_images_per_s"]) - 1) < 0.02
