"""scripts/speed_contention_study.py: it refuses what it cannot run before timing anything, its summary is the mean
and range over repetitions of each setting, and a smoke run with a busy process records it in the machine's load."""

import pytest


def test_it_refuses_what_it_cannot_run_before_timing(load_script):
    mod = load_script("speed_contention_study")
    with pytest.raises(SystemExit):
        mod.main([])  # --run is required
    for bad in ("tinyres16_anyband,1,quiet", "tinyres16_anyband,one,quiet,0", "tinyres16_anyband,1,noisy,0",
                "tinyres16_anyband,1,quiet,0,x", "tinyres16_anyband,1,quiet,0,1,2"):
        with pytest.raises(ValueError, match="STUDENT,THREADS,LOAD,N"):
            mod.run([bad], "smoke")
    with pytest.raises(ValueError, match="unknown encoder 'resnet9000'"):
        mod.run(["resnet9000,1,quiet,0"], "smoke")
    assert mod.parse_run("tinyres16_anyband,0,busy,2") == {"student": "tinyres16_anyband", "threads": 0,
                                                            "load": "busy", "seed": 2, "rewarm": None}
    assert mod.parse_run("tinyres16_anyband,0,quiet,2,1")["rewarm"] == 1


def test_summary_means_each_setting_and_keeps_the_range(load_script):
    mod = load_script("speed_contention_study")
    rows = [{"student": "a", "threads": 1, "load": "busy", "rewarm": 0, "seed": n, "speedup_torch": t, "speedup_onnx": o,
             "machine_onnx": {"other_cpu_share": share}} for n, t, o, share in ((0, 10.0, 20.0, 0.5), (1, 12.0, 22.0, 0.4))]
    rows.append({"student": "a", "threads": 0, "load": "busy", "rewarm": 0, "seed": 0, "speedup_torch": 3.0,
                 "speedup_onnx": 18.0, "machine_onnx": None})
    out = {(s["threads"], s["load"]): s for s in mod.summarise(rows)}
    one = out[(1, "busy")]
    assert one["seeds"] == [0, 1] and one["speedup_onnx_mean"] == pytest.approx(21.0)
    assert one["speedup_torch_range"] == [10.0, 12.0] and one["other_cpu_share_onnx_mean"] == pytest.approx(0.45)
    assert out[(0, "busy")]["other_cpu_share_onnx_mean"] is None  # no load measured (off Linux)


def test_a_smoke_run_records_the_busy_process(load_script):
    import os
    from pathlib import Path

    mod = load_script("speed_contention_study")
    quiet, busy = mod.run(["tinyres16_anyband,1,quiet,0", "tinyres16_anyband,1,busy,0,0"], "smoke")
    from vhrfm.config import load_profile

    assert quiet["rewarm"] == load_profile("smoke")["distill"]["speedup_rewarm_calls"] and busy["rewarm"] == 0
    for row in (quiet, busy):
        assert row["threads_torch"] == row["threads_onnx"] == 1
        for rt in ("torch", "onnx"):
            lo, hi = row[f"speedup_{rt}_iqr"]
            assert 0 < lo <= row[f"speedup_{rt}"] <= hi
    if Path("/proc/stat").exists():
        assert busy["machine_onnx"]["other_cpu_share"] >= 0.6 / os.cpu_count()
        assert 0 <= quiet["machine_onnx"]["other_cpu_share"] <= 1
