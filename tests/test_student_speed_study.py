"""scripts/student_speed_study.py: its summary is the mean and range over repetitions of each student's speed-ups,
it refuses what it cannot run before timing anything, and a smoke run gives the four readings with the profile's
pause where it belongs (its no-spin sessions: ``ort_session(spin=False)``, tested in test_distill.py)."""

import pytest

READINGS = ("torch", "onnx", "onnx_nospin", "onnx_nosettle")


def test_summary_means_each_student_and_keeps_the_range(load_script):
    mod = load_script("student_speed_study")
    rows = [{"student": "a", "seed": n, **{f"speedup_{r}": v + i for i, r in enumerate(READINGS)}} for n, v in
            ((0, 10.0), (1, 12.0))]
    rows.append({"student": "b", "seed": 0, **{f"speedup_{r}": 3.0 for r in READINGS}})
    out = {s["student"]: s for s in mod.summarise(rows)}
    assert set(out) == {"a", "b"} and out["a"]["seeds"] == [0, 1]
    assert out["a"]["speedup_torch_mean"] == pytest.approx(11.0) and out["a"]["speedup_torch_range"] == [10.0, 12.0]
    assert out["a"]["speedup_onnx_nosettle_mean"] == pytest.approx(14.0)
    assert out["b"]["speedup_onnx_range"] == [3.0, 3.0]


def test_it_refuses_what_it_cannot_run_before_timing(load_script):
    mod = load_script("student_speed_study")
    with pytest.raises(SystemExit):
        mod.main([])  # --run is required
    with pytest.raises(ValueError, match="STUDENT,N"):
        mod.run(["tinyres16_anyband"], "smoke")
    with pytest.raises(ValueError, match="STUDENT,N"):
        mod.run(["tinyres16_anyband,first"], "smoke")
    with pytest.raises(ValueError, match="no distilled student 'convnext_atto_anyband'"):
        mod.run(["convnext_atto_anyband,0"], "smoke")
    assert mod.parse_run("tinyres16_anyband,3") == {"student": "tinyres16_anyband", "seed": 3}


def test_a_smoke_run_gives_every_reading_with_the_profiles_pause(load_script, real_data):
    from vhrfm.config import load_profile

    mod = load_script("student_speed_study")
    d = load_profile("smoke")["distill"]
    (row,) = mod.run([f"{d['students'][0]},0"], "smoke")
    assert row["input_px"] == d["bench_size"] and row["rounds"] == max(10, 3 * d["bench_repeats"])
    for r in READINGS:
        lo, hi = row[f"speedup_{r}_iqr"]
        assert 0 < lo <= row[f"speedup_{r}"] <= hi
        assert row[f"settle_ms_{r}"] == (0.0 if r == "onnx_nosettle" else d["speedup_settle_ms"])
