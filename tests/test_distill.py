"""Distillation: the KD objective, training a student through the pretraining loop, band-fixed export,
ONNX parity and the efficiency measurements."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vhrfm.checkpoint import load_encoder, save_encoder
from vhrfm.distill.efficiency import FixedBands, measure, n_params
from vhrfm.distill.kd import FeatureKD, similarity_preserving
from vhrfm.models import create_encoder, encoder_config, fix_bands
from vhrfm.ssl.train import pretrain

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import CFG, synthetic_corpus  # noqa: E402

WL, WD = [665.0, 560.0, 490.0], [30.0, 35.0, 65.0]


def test_similarity_preserving_is_zero_only_for_matching_geometry():
    f = torch.randn(6, 16)
    assert similarity_preserving(f, 3 * f).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert similarity_preserving(f, torch.randn(6, 16)).item() > 1e-3


@pytest.mark.parametrize("arch", ["mobilenetv3_small_anyband", "vit_nano_p8"])
def test_fix_bands_gives_the_same_outputs(arch):
    torch.manual_seed(0)
    enc = create_encoder(arch).eval()
    x, gsd = torch.randn(2, 3, 64, 64), torch.full((2,), 0.5)
    fixed = fix_bands(enc, WL, WD)
    torch.testing.assert_close(fixed(x, WL, gsd, WD), enc(x, WL, gsd, WD), atol=1e-5, rtol=1e-5)
    assert enc.forward_features(x, WL[::-1], gsd, WD[::-1]).shape[0] == 2  # the original still takes any bands


def test_kd_objective_trains_the_student_only(tmp_path):
    torch.manual_seed(0)
    teacher = create_encoder("vit_nano_p8")
    tpath = save_encoder(teacher, tmp_path / "teacher.safetensors", {"arch": "vit_nano_p8",
                                                                      "arch_kwargs": encoder_config("vit_nano_p8")})
    before = {k: v.clone() for k, v in load_encoder(tpath).state_dict().items()}
    cfg = {**CFG, "encoder": "mobilenetv3_small_anyband", "teacher": str(tpath), "steps": 3, "cos_weight": 1.0,
           "rel_weight": 1.0}
    s = pretrain("kd_student", "distill", cfg, synthetic_corpus(), tmp_path / "out", progress=False)
    student = load_encoder(tmp_path / "out" / "kd_student.safetensors")
    assert student.card["arch"] == "mobilenetv3_small_anyband" and s["steps"] == 3
    log = (tmp_path / "out" / "kd_student_log.csv").read_text().splitlines()
    assert "cosine" in log[0] and len(log) == 4
    # the teacher inside the objective is frozen: its weights do not move
    obj = FeatureKD(create_encoder("mobilenetv3_small_anyband"), load_encoder(tpath))
    assert not any(p.requires_grad for p in obj.teacher.parameters())
    for k, v in load_encoder(tpath).state_dict().items():
        torch.testing.assert_close(v, before[k])
    out = obj(torch.randn(4, 3, 32, 32), WL, torch.full((4,), 0.5), WD)
    out["loss"].backward()
    assert all(p.grad is None for p in obj.teacher.parameters())
    assert obj.projector[0].weight.grad is not None


def test_efficiency_measurements_and_onnx_parity():
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv3_small_anyband")
    m = measure(enc, WL, WD, 0.5, size=64, batch=2, repeats=2)
    assert m["params"] == 1_558_928  # mobilenetv3_small_anyband: the figure the distillation goal is checked with
    assert m["size_mb_fp32"] == pytest.approx(4 * m["params"] / 1e6, rel=0.05)  # + buffers and the file header
    assert m["size_mb_fp16"] == pytest.approx(m["size_mb_fp32"] / 2, rel=0.05)
    assert m["size_mb_int8"] < m["onnx_mb_fp32"] / 2
    assert m["flops_per_image"] > 2 * m["params"]  # a conv net reuses each weight at many positions
    assert m["onnx_max_abs_diff"] < 1e-4 and m["onnx_int8_cosine_to_torch"] > 0.99
    assert m["cpu_latency_ms"] > 0 and m["onnx_latency_ms"] > 0 and m["cpu_images_per_s_b2"] > 0
    assert FixedBands(enc, WL, WD, 0.5)(torch.randn(1, 3, 64, 64)).shape == (1, enc.num_features)
    assert "onnx_int8_static_latency_ms" not in m  # static int8 only with calibration windows


def test_efficiency_static_int8_is_calibrated_and_checked_on_other_windows():
    torch.manual_seed(0)
    enc = create_encoder("resnet18_anyband")
    rng = np.random.default_rng(0)
    calib, evaluation = rng.normal(size=(3, 3, 64, 64)).astype(np.float32), rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
    m = measure(enc, WL, WD, 0.5, size=64, batch=2, repeats=2, calib=calib, evaluation=evaluation)
    assert m["size_mb_int8_static"] < m["onnx_mb_fp32"] / 2 and m["onnx_int8_static_latency_ms"] > 0
    assert 0.99 < m["onnx_int8_static_cosine_to_torch"] <= 1.0
    # calibrated on a tenth of the input's range, the activations saturate: the fidelity check sees it
    bad = measure(enc, WL, WD, 0.5, size=64, batch=2, repeats=1, calib=calib * 0.01, evaluation=evaluation)
    assert bad["onnx_int8_static_cosine_to_torch"] < m["onnx_int8_static_cosine_to_torch"]


def test_fastest_onnx_latency_takes_static_int8_only_when_faithful():
    from vhrfm.distill.run import fastest_onnx_ms

    e = {"onnx_latency_ms": 10.0, "onnx_cosine_to_torch": 1.0, "onnx_int8_static_latency_ms": 4.0,
         "onnx_int8_static_cosine_to_torch": 0.999}
    assert fastest_onnx_ms(e) == 4.0
    assert fastest_onnx_ms({**e, "onnx_int8_static_cosine_to_torch": 0.9}) == 10.0
    assert fastest_onnx_ms({**e, "onnx_int8_static_latency_ms": 12.0}) == 10.0


def test_parameter_and_flop_counts_on_known_modules():
    """The counters against hand counts: a 3x3 convolution, 3 -> 8 channels, on a 16 x 16 input does
    8 x 16 x 16 outputs x 27 multiply-adds (2 FLOPs each); its 8 x 27 weights and 8 biases are the parameters."""
    from vhrfm.distill.efficiency import flops

    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert n_params(conv) == 8 * 27 + 8
    assert flops(conv, torch.zeros(1, 3, 16, 16)) == 2 * 8 * 16 * 16 * 27
    assert flops(conv, torch.zeros(2, 3, 16, 16)) == 2 * flops(conv, torch.zeros(1, 3, 16, 16))


def test_paired_speedup_is_the_median_ratio_of_alternating_timings():
    """A fake clock: the reference call costs 4 units, the other 1, except one round where the machine is slowed
    fivefold for both; the paired ratio stays 4 in every round (the separate latencies would not), and the calls
    alternate in order."""
    from vhrfm.distill.efficiency import paired_speedup

    now, order, slow = [0.0], [], {6}

    def call(name, cost):
        def f():
            order.append(name)
            round_ = (len(order) - 1 - 4) // 2  # after 2 warm-up pairs
            now[0] += cost * (5 if round_ in slow else 1)
        return f

    out = paired_speedup(call("ref", 4.0), call("fn", 1.0), rounds=9, warmup=2, clock=lambda: now[0])
    assert out == {"median": 4.0, "iqr": [4.0, 4.0], "rounds": 9, "calls_per_timing": 1, "settle_ms": 0.0,
                   "rewarm_calls": 0}
    assert order[4:8] == ["ref", "fn", "fn", "ref"]  # round 0 reference first, round 1 the other first


def test_paired_speedup_times_blocks_of_calls_long_enough():
    """With ``min_block_s``, each timing runs as many calls as fill that much of ``fn``'s time (here
    1 unit per call, 5 units asked: 5 calls), for both callables, and the ratio is unchanged."""
    from vhrfm.distill.efficiency import paired_speedup

    now, calls = [0.0], {"ref": 0, "fn": 0}

    def call(name, cost):
        def f():
            calls[name] += 1
            now[0] += cost
        return f

    out = paired_speedup(call("ref", 4.0), call("fn", 1.0), rounds=4, warmup=1, clock=lambda: now[0], min_block_s=5.0)
    assert out["calls_per_timing"] == 5 and out["median"] == 4.0
    # warm-up, the calibration blocks of fn (1, 2, 4, then 8 calls: the first to last 5 units), 4 rounds of 5
    assert calls == {"ref": 1 + 4 * 5, "fn": 1 + (1 + 2 + 4 + 8) + 4 * 5}


def test_calls_per_block_is_not_set_by_a_few_slow_first_calls():
    """A fresh session's first calls run slower: here 10 units each for the first three, then 1. One call timed
    after a two-call warm-up would ask for 2 calls per 20-unit block; growing blocks find the steady 20."""
    from vhrfm.distill.efficiency import calls_per_block

    now, n = [0.0], [0]

    def fn():
        n[0] += 1
        now[0] += 10.0 if n[0] <= 3 else 1.0

    fn(), fn()  # the warm-up
    assert calls_per_block(fn, 20.0, clock=lambda: now[0]) == 20
    assert calls_per_block(fn, 0.5, clock=lambda: now[0]) == 1  # one call already fills the block


def test_paired_speedup_settles_before_each_block_outside_the_timing():
    """With ``settle_s``, an idle pause precedes every timed block of either callable (the other runtime's threads
    stop spinning), and is not timed: a fake sleep that moves the fake clock by a lot leaves the ratio at 4."""
    from vhrfm.distill.efficiency import paired_speedup

    now, events = [0.0], []

    def call(name, cost):
        def f():
            events.append(name)
            now[0] += cost
        return f

    def sleep(s):
        events.append("sleep")
        now[0] += 1000.0 * s

    out = paired_speedup(call("ref", 4.0), call("fn", 1.0), rounds=4, warmup=1, clock=lambda: now[0],
                         min_block_s=2.0, settle_s=0.05, sleep=sleep)
    assert out["median"] == 4.0 and out["iqr"] == [4.0, 4.0] and out["settle_ms"] == 50.0
    # the warm-up pair, then fn's calibration blocks (1, then 2 calls), each after the same pause as a timed block:
    # right after the other model's calls, the calibration would count calls in a machine state no timing sees
    assert events[:7] == ["ref", "fn", "sleep", "fn", "sleep", "fn", "fn"]
    timed = events[7:]
    assert timed == ["sleep", "ref", "ref", "sleep", "fn", "fn", "sleep", "fn", "fn", "sleep", "ref", "ref"] * 2
    # rewarm: after each pause, untimed calls of the block's own callable (the steady state of a stream of calls)
    events.clear()
    out = paired_speedup(call("ref", 4.0), call("fn", 1.0), rounds=2, warmup=1, clock=lambda: now[0],
                         min_block_s=2.0, settle_s=0.05, sleep=sleep, rewarm=1)
    assert out["median"] == 4.0 and out["rewarm_calls"] == 1
    assert events[:9] == ["ref", "fn", "sleep", "fn", "fn", "sleep", "fn", "fn", "fn"]  # calibration blocks, re-warmed
    assert events[9:] == ["sleep", "ref", "ref", "ref", "sleep", "fn", "fn", "fn", "sleep", "fn", "fn", "fn",
                          "sleep", "ref", "ref", "ref"]
    # without it, no pause
    events.clear()
    paired_speedup(call("ref", 4.0), call("fn", 1.0), rounds=2, warmup=1, clock=lambda: now[0], sleep=sleep)
    assert "sleep" not in events


def test_a_no_spin_session_turns_the_worker_threads_spinning_off(tmp_path):
    from vhrfm.distill.efficiency import export_onnx, ort_session

    path = export_onnx(torch.nn.Conv2d(3, 4, 3).eval(), torch.zeros(1, 3, 16, 16), tmp_path / "c.onnx")
    key = "session.intra_op.allow_spinning"
    assert ort_session(path, spin=False).get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(Exception, match="does not have configuration"):  # ONNX Runtime's default (spinning), as the
        ort_session(path).get_session_options().get_session_config_entry(key)  # chapter's sessions


def test_architecture_scan_times_untrained_candidates_like_the_students():
    from vhrfm.distill.efficiency import architecture_scan
    from vhrfm.models.conv import AnyBandConvNet

    teacher = create_encoder("resnet18_anyband").eval()
    out = architecture_scan(teacher, ["mobilenetv3_small_050", "mobilenetv3_small_100"], WL, WD, 0.5, size=32, rounds=3)
    assert list(out) == ["mobilenetv3_small_050", "mobilenetv3_small_100"]
    narrow, wide = out["mobilenetv3_small_050"], out["mobilenetv3_small_100"]
    assert wide["params"] == n_params(create_encoder("mobilenetv3_small_anyband"))  # the registry's student, same net
    assert narrow["params"] == n_params(AnyBandConvNet("mobilenetv3_small_050")) < wide["params"]
    assert narrow["flops_per_image"] < wide["flops_per_image"]
    for r in out.values():
        for rt in ("torch", "onnx"):
            assert r[f"speedup_{rt}_iqr"][0] <= r[f"speedup_{rt}"] <= r[f"speedup_{rt}_iqr"][1]


def test_scan_names_the_student_built_on_a_candidate():
    from vhrfm.distill.run import scan_student

    students = ["tinyres16_anyband", "mobilenetv3_small_anyband", "vit_nano_p8"]
    assert scan_student("vhrfm_tinyres16", students) == "tinyres16_anyband"
    assert scan_student("mobilenetv3_small_100", students) == "mobilenetv3_small_anyband"
    assert scan_student("mobilenetv3_small_050", students) is None  # a narrower candidate, not distilled
    assert scan_student("vhrfm_tinyres16", ["mobilenetv3_small_anyband"]) is None  # a registry net, not a student here


def test_paired_speedups_in_torch_and_onnx_runtime():
    from vhrfm.distill.efficiency import paired_speedups

    torch.manual_seed(0)
    big, small = create_encoder("resnet18_anyband"), create_encoder("mobilenetv3_small_anyband")
    out = paired_speedups(big, {"small": small}, WL, WD, 0.5, size=64, rounds=3)["small"]
    for rt in ("torch", "onnx"):
        assert out[rt]["rounds"] == 3 and out[rt]["iqr"][0] <= out[rt]["median"] <= out[rt]["iqr"][1]
        assert out[rt]["median"] > 0


def test_paired_speedups_with_one_thread_run_both_runtimes_on_one_thread_and_restore_torch(monkeypatch):
    import vhrfm.distill.efficiency as eff

    seen, real = [], eff.ort_session
    monkeypatch.setattr(eff, "ort_session", lambda path, threads=None, spin=True: seen.append(threads) or
                        real(path, threads, spin))
    monkeypatch.setattr(eff, "paired_speedup", lambda ref, fn, rounds, **kw: {"median": 1.0, "iqr": [1.0, 1.0],
                                                                             "inside": torch.get_num_threads()})
    before = torch.get_num_threads()
    torch.manual_seed(0)
    big, small = create_encoder("resnet18_anyband").eval(), create_encoder("mobilenetv3_small_anyband").eval()
    out = eff.paired_speedups(big, {"small": small}, WL, WD, 0.5, size=32, rounds=1, threads=1)["small"]
    assert seen == [1, 1]  # the teacher's session and the student's
    assert set(out) == {"torch_1thread", "onnx_1thread"}
    for rt in ("torch", "onnx"):
        got = out[f"{rt}_1thread"]
        assert got["inside"] == 1 and got["threads"] == 1 and got["batch"] == 1
        assert set(got["machine"] or {}) <= {"other_cpu_share", "steal_share", "own_cpu_share", "seconds"}
    assert torch.get_num_threads() == before
    seen.clear()
    out = eff.paired_speedups(big, {"small": small}, WL, WD, 0.5, size=32, rounds=1)["small"]
    assert seen == [None, None] and out["onnx"]["threads"] == before  # default: every core PyTorch uses


def test_paired_speedups_export_once_for_every_thread_count_and_pair_the_batch_at_the_first(monkeypatch):
    """threads=(None, 1): each network exported once, sessions at each count (teacher, then the students, per
    count), each reading under its own key; the batch pair runs in PyTorch at the first count only, on a batch."""
    import vhrfm.distill.efficiency as eff

    exported, sessions, shapes, real_export, real_session = [], [], [], eff.export_onnx, eff.ort_session
    monkeypatch.setattr(eff, "export_onnx", lambda m, x, path, *a: exported.append(Path(path).stem) or
                        real_export(m, x, path, *a))
    monkeypatch.setattr(eff, "ort_session", lambda path, threads=None, spin=True: sessions.append(
        (Path(path).stem, threads)) or real_session(path, threads, spin))

    def fake_pair(ref, fn, rounds, **kw):
        y = fn()
        shapes.append(tuple(y[0].shape) if isinstance(y, list) else tuple(y.shape))
        return {"median": 1.0, "iqr": [1.0, 1.0], "rounds": rounds}

    monkeypatch.setattr(eff, "paired_speedup", fake_pair)
    torch.manual_seed(0)
    big, small = create_encoder("resnet18_anyband").eval(), create_encoder("mobilenetv3_small_anyband").eval()
    tiny = create_encoder("tinyres16_anyband").eval()
    out = eff.paired_speedups(big, {"a": small, "b": tiny}, WL, WD, 0.5, size=32, rounds=3, threads=(None, 1),
                              batch=4, batch_rounds=2)
    assert sorted(exported) == ["a", "b", "teacher"]
    assert sessions == [("teacher", None), ("a", None), ("b", None), ("teacher", 1), ("a", 1), ("b", 1)]
    for name in ("a", "b"):
        assert set(out[name]) == {"torch", "onnx", "torch_b4", "torch_1thread", "onnx_1thread"}
        assert out[name]["torch_b4"]["rounds"] == 2 and out[name]["torch_b4"]["batch"] == 4
        assert out[name]["torch"]["rounds"] == 3 and out[name]["onnx_1thread"]["threads"] == 1
    assert [s[0] for s in shapes] == [1, 1, 4, 1, 1, 4, 1, 1, 1, 1]  # per student: torch, onnx, torch at batch 4


def test_speedup_key_names_runtime_batch_and_threads():
    from vhrfm.distill.efficiency import speedup_key

    assert speedup_key("torch") == "torch" and speedup_key("onnx", None) == "onnx"
    assert speedup_key("onnx", 1) == "onnx_1thread" and speedup_key("torch", None, 32) == "torch_b32"
    assert speedup_key("torch", 2, 32) == "torch_b32_2thread"


def test_machine_load_sees_another_busy_process():
    import os
    import subprocess
    import time

    from vhrfm.distill.efficiency import machine_load

    if not Path("/proc/stat").exists():
        with machine_load() as load:
            pass
        assert load.result is None
        return
    with machine_load() as quiet:
        time.sleep(0.5)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with machine_load() as loaded:
            time.sleep(1.0)
    finally:
        busy.kill()
        busy.wait()
    # one spinning process holds about one core of the machine's os.cpu_count(): this process sleeps meanwhile
    assert loaded.result["other_cpu_share"] >= 0.6 / os.cpu_count()
    assert 0 <= quiet.result["other_cpu_share"] <= 1
    assert 0 <= loaded.result["own_cpu_share"] < 0.2 and 0 <= loaded.result["steal_share"] <= 1


def test_paired_speedups_time_the_teacher_as_the_reference(monkeypatch):
    """The speed-up is teacher time over student time: paired_speedup's first callable must run the teacher (in
    torch and in ONNX Runtime), its second the student; checked by their outputs, not by a clock."""
    import vhrfm.distill.efficiency as eff

    calls = []
    monkeypatch.setattr(eff, "paired_speedup", lambda ref, fn, rounds, **kw: calls.append((ref(), fn())) or
                        {"median": 1.0, "iqr": [1.0, 1.0], "rounds": rounds})
    torch.manual_seed(0)
    big, small = create_encoder("resnet18_anyband").eval(), create_encoder("mobilenetv3_small_anyband").eval()
    eff.paired_speedups(big, {"small": small}, WL, WD, 0.5, size=32, rounds=1)
    torch.manual_seed(0)
    x1 = torch.randn(1, 3, 32, 32)  # the input paired_speedups draws with the same seed
    with torch.no_grad():
        want_ref, want_fn = FixedBands(big, WL, WD, 0.5)(x1), FixedBands(small, WL, WD, 0.5)(x1)
    assert len(calls) == 2  # torch, then ONNX Runtime
    (t_ref, t_fn), (o_ref, o_fn) = calls
    torch.testing.assert_close(t_ref, want_ref)
    torch.testing.assert_close(t_fn, want_fn)
    torch.testing.assert_close(torch.from_numpy(o_ref[0]), want_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(o_fn[0]), want_fn, atol=1e-4, rtol=1e-4)


def test_paired_timing_maps_a_profiles_settings_onto_paired_speedups():
    import inspect

    from vhrfm.config import load_profile
    from vhrfm.distill.efficiency import architecture_scan, paired_speedups, task_model_efficiency
    from vhrfm.distill.run import paired_timing

    assert paired_timing({"bench_repeats": 2}) == {"rounds": 10, "min_block_s": 0.0, "settle_s": 0.0, "rewarm": 0}
    t = paired_timing(load_profile("cpu")["distill"])
    assert t == {"rounds": 30, "min_block_s": 0.02, "settle_s": 0.05, "rewarm": 1}
    for f in (paired_speedups, architecture_scan, task_model_efficiency):  # every function the stage passes it to
        assert set(t) <= set(inspect.signature(f).parameters)
