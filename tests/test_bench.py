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
