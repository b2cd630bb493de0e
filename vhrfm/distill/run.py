"""The distillation chapter in two stages.

``vhrfm.distill.train.train_students`` (stage ``distill``): self-supervised KD of the teacher into each student, and the same students
trained with SSL from scratch, on the unlabeled corpus. The applications then train each task's student variants
(:mod:`vhrfm.distill.task`). ``run_distillation`` (stage ``distillation``, after the applications): chapter-1
probes for all encoders, every model's efficiency measured on this machine, and the task F1 of the students
gathered from the applications' metrics."""

from __future__ import annotations

import json

from vhrfm.checkpoint import load_encoder
from vhrfm.config import APP_TASKS, load_profile, models_dir, results_dir
from vhrfm.ssl.evaluate import mean_over_tasks, probe_all, probe_tasks, random_encoder

# the probe band set for efficiency figures: Pleiades RGB at 0.5 m (the aircraft task's imagery)
EFFICIENCY_BANDS = {"sensor": "pleiades", "bands": ("red", "green", "blue"), "gsd": 0.5}


def task_f1(profile: str, task: str, student: str) -> dict | None:
    """The student's task-KD F1 and the distilled teacher's at the task's largest label budget, from the task's
    metrics (None when the task has not run, or ran another student)."""
    path = results_dir(profile) / task / "metrics.json"
    if not path.exists():
        return None
    block = json.loads(path.read_text()).get("distillation") or {}
    if block.get("student") != student or not block.get("by_budget"):
        return None
    budgets = load_profile(profile)[task]["budgets"]
    b = max(block["by_budget"], key=lambda k: budgets.get(k, 0))
    return {"budget": b, **block["by_budget"][b]}


def task_scores(profile: str, student: str) -> dict:
    """``f1_wildfire``, ``f1_megafauna`` (task-KD student, largest budget, test), and ``f1_retained``: the
    student's F1 over the distilled teacher's, averaged over the tasks (None where a task has no such run)."""
    rows = {t: task_f1(profile, t, student) for t in APP_TASKS}
    ratios = [r["f1_retained"] for r in rows.values() if r and r.get("f1_retained") is not None]
    return {"f1_wildfire": rows["wildfire"]["student_taskkd_f1"] if rows["wildfire"] else None,
            "f1_megafauna": rows["megafauna"]["student_taskkd_f1"] if rows["megafauna"] else None,
            "f1_retained": sum(ratios) / len(ratios) if len(ratios) == 2 else None,
            "task_kd": rows}


def index_models(profile: str, task: str, roles: tuple[str, ...]) -> dict | None:
    """The task models a task's ``index.json`` names for ``roles`` (e.g. teacher, student), loaded as `vhrfm predict`
    finds them; None when the task has not run or its index lacks a role."""
    from vhrfm.apps.taskmodel import load_task_model, resolve_task_model
    from vhrfm.errors import VHRFMInputError

    try:
        return {r: load_task_model(resolve_task_model(task, r, profile), task=task) for r in roles}
    except VHRFMInputError:
        return None


def goal_check(students: dict, max_params: int = 2_000_000, max_int8_mb: float = 5.0, min_speedup: float = 20.0,
               min_retained: float = 0.95) -> dict:
    """The chapter's goal per student: <= ``max_params`` parameters, <= ``max_int8_mb`` MB in int8, >= ``min_speedup``
    x the teacher's CPU speed (PyTorch, batch 1: the median of alternating timings, ``speedup_vs_teacher``), and
    >= ``min_retained`` of the teacher's task F1 on *each* task: ``met``.

    The issue asks for the speed "on the CPU" without naming a runtime. ``met_onnx`` is the same goal with the speed
    read with both models in ONNX Runtime (``speedup_vs_teacher_onnx``, batch 1, paired; how ``vhrfm predict
    --runtime onnx`` runs a network), so the two readings are never mixed. ``speed_ok_batch`` (PyTorch throughput at
    the bench batch, 32, paired too; ``speedup_vs_teacher_batch``) is reported beside them and counts towards neither.

    ``met_onnx_1thread`` reads the speed in ONNX Runtime with one thread per model (``speedup_vs_teacher_onnx_1thread``):
    on a shared two-core machine the two-thread readings fall whenever another process is busy (from 24x to 18-20x
    in ONNX Runtime with one busy process, ``scripts/speed_contention_study.py``), the one-thread ones do not, so it
    is the reading this machine can certify; the two-core readings stay the ones an analyst's idle machine sees."""
    rows = {}
    for name, v in students.items():
        per_task = [r["f1_retained"] if r and r.get("f1_retained") is not None else None for r in v["task_kd"].values()]
        row = {"params_ok": v["params"] <= max_params, "size_ok": v["size_mb_int8"] <= max_int8_mb,
               "speed_ok": v["speedup_vs_teacher"] >= min_speedup,
               "f1_ok": None if None in per_task else all(r >= min_retained for r in per_task)}
        row["met"] = all(row.values())
        for key, flag in (("speedup_vs_teacher_onnx", "speed_ok_onnx"), ("speedup_vs_teacher_batch", "speed_ok_batch"),
                          ("speedup_vs_teacher_onnx_1thread", "speed_ok_onnx_1thread")):
            if v.get(key) is not None:
                row[flag] = v[key] >= min_speedup
        rest = all(row[k] for k in ("params_ok", "size_ok", "f1_ok"))
        row["met_onnx"] = bool(row.get("speed_ok_onnx")) and rest
        row["met_onnx_1thread"] = bool(row.get("speed_ok_onnx_1thread")) and rest
        rows[name] = row
    return {"students": rows, "met": any(r["met"] for r in rows.values()),
            "met_onnx": any(r["met_onnx"] for r in rows.values()),
            "met_onnx_1thread": any(r["met_onnx_1thread"] for r in rows.values()),
            "targets": {"params": max_params, "size_mb_int8": max_int8_mb, "speedup_vs_teacher": min_speedup,
                        "f1_retained_each_task": min_retained}}


def scan_student(timm_name: str, students: list[str]) -> str | None:
    """The student of ``students`` (registry names) built on the timm network ``timm_name``, or None."""
    from vhrfm.models import encoder_config

    return next((s for s in students if encoder_config(s).get("timm_name") == timm_name), None)


def fastest_onnx_ms(e: dict, min_cosine: float = 0.99) -> float:
    """The lower ONNX Runtime latency of an efficiency record (:func:`vhrfm.distill.efficiency.measure`): fp32, or
    static int8 where its features stay within ``min_cosine`` of PyTorch's (:func:`fastest_precision`)."""
    from vhrfm.distill.efficiency import fastest_precision

    graphs = ("onnx", "onnx_int8_static")
    latency = {g: e[f"{g}_latency_ms"] for g in graphs}
    return latency[fastest_precision(latency, {g: e[f"{g}_cosine_to_torch"] for g in graphs}, min_cosine)]


def paired_timing(d: dict) -> dict:
    """The paired timings' settings of a profile's ``distill`` block ``d``, as keyword arguments of
    :func:`vhrfm.distill.efficiency.paired_speedups` (and its siblings): rounds, blocks of calls long enough to time
    (``speedup_min_block_ms``), each after an idle pause (``speedup_settle_ms``: ONNX Runtime's spinning threads) and
    as many untimed calls (``speedup_rewarm_calls``: the steady state of a stream of windows)."""
    return {"rounds": max(10, 3 * d["bench_repeats"]), "min_block_s": d.get("speedup_min_block_ms", 0) / 1e3,
            "settle_s": d.get("speedup_settle_ms", 0) / 1e3, "rewarm": d.get("speedup_rewarm_calls", 0)}


def run_distillation(profile: str, progress: bool = True) -> dict:
    from vhrfm.distill.efficiency import (architecture_scan, calibration_windows, measure, paired_speedups,
                                          speedup_key, task_model_efficiency)
    from vhrfm.sensors import get_sensor

    p = load_profile(profile)
    d, seed = p["distill"], p["seed"]
    out_models = models_dir(profile) / "distill"
    out = results_dir(profile) / "distillation"
    out.mkdir(parents=True, exist_ok=True)
    training = json.loads((out_models / "training.json").read_text())
    runs, train_s = training["runs"], training["training_seconds"]
    teacher = load_encoder(models_dir(profile) / "teacher.safetensors")
    encoders = {"teacher": teacher}
    for student in d["students"]:
        encoders[f"kd_{student}"] = load_encoder(out_models / f"kd_{student}.safetensors")
        encoders[f"ssl_{student}"] = load_encoder(out_models / f"ssl_{student}.safetensors")
        encoders[f"random_{student}"] = random_encoder(student, seed)
    tasks, dropped = probe_tasks(profile)
    probe = probe_all(encoders, tasks, seed=seed, n_boot=p["probe"]["n_boot"], progress=progress)
    sensor = get_sensor(EFFICIENCY_BANDS["sensor"])
    wl, wd = sensor.wavelengths(EFFICIENCY_BANDS["bands"]), sensor.widths(EFFICIENCY_BANDS["bands"])
    eff = {}
    # static int8: activation ranges calibrated on real Pleiades windows, fidelity checked on windows of other scenes
    calib, evaluation = calibration_windows(size=d["bench_size"], seed=seed)
    for name in ["teacher", *[f"kd_{s}" for s in d["students"]]]:
        eff[name] = measure(encoders[name], wl, wd, EFFICIENCY_BANDS["gsd"], size=d["bench_size"], batch=d["bench_batch"],
                            repeats=d["bench_repeats"], seed=seed, calib=calib, evaluation=evaluation)
    t_lat = eff["teacher"]["cpu_latency_ms"]
    timing = paired_timing(d)
    # at every core, then at one thread per model (a reading another busy process on the machine leaves as it is),
    # and the PyTorch throughput at the bench batch at every core: one export of each network
    speedups = paired_speedups(encoders["teacher"], {s: encoders[f"kd_{s}"] for s in d["students"]}, wl, wd,
                               EFFICIENCY_BANDS["gsd"], size=d["bench_size"], seed=seed, threads=(None, 1),
                               batch=d["bench_batch"], batch_rounds=max(5, d["bench_repeats"]), progress=progress,
                               **timing)
    scan = architecture_scan(encoders["teacher"], d.get("scan", []), wl, wd, EFFICIENCY_BANDS["gsd"],
                             size=d["bench_size"], seed=seed, progress=progress, **timing)
    for name, r in scan.items():  # the student (if any) whose network this is: distilled, its task F1 measured
        r["distilled_as"] = scan_student(name, d["students"])
    task_models = {}
    for task in APP_TASKS:
        pair = index_models(profile, task, ("teacher", "student"))
        if pair:
            task_models[task] = task_model_efficiency(pair, "teacher", size=pair["student"].card.get("tile_size", 256),
                                                      seed=seed, **timing)
    students, tput = {}, "cpu_images_per_s_b%d" % d["bench_batch"]
    batch_key = speedup_key("torch", None, d["bench_batch"])
    for s in d["students"]:
        e, paired = eff[f"kd_{s}"], speedups[s]
        students[s] = {
            "encoder": s, "params": e["params"], "flops_per_image": e["flops_per_image"],
            "size_mb_fp32": e["size_mb_fp32"], "size_mb_fp16": e["size_mb_fp16"], "size_mb_int8": e["size_mb_int8"],
            "cpu_latency_ms": e["cpu_latency_ms"], "onnx_latency_ms": e["onnx_latency_ms"],
            "onnx_int8_latency_ms": e["onnx_int8_latency_ms"],
            # static int8 (calibrated): unlike the dynamic graph above, it can run faster than fp32
            "size_mb_int8_static": e["size_mb_int8_static"], "onnx_int8_static_latency_ms": e["onnx_int8_static_latency_ms"],
            "onnx_int8_static_cosine_to_torch": e["onnx_int8_static_cosine_to_torch"],
            "speedup_vs_teacher_onnx_int8_static_unpaired": round(eff["teacher"]["onnx_int8_static_latency_ms"]
                                                                  / e["onnx_int8_static_latency_ms"], 3),
            # each network in its faster ONNX precision (fp32 or static int8): what a deployment would run
            "speedup_fastest_vs_teacher_fastest_unpaired": round(fastest_onnx_ms(eff["teacher"]) / fastest_onnx_ms(e), 3),
            # the speed-ups: teacher and student timed alternately (paired_speedup), median over rounds and IQR;
            # the ratios of the separately measured latencies above are kept as *_unpaired
            "speedup_vs_teacher": paired["torch"]["median"], "speedup_vs_teacher_iqr": paired["torch"]["iqr"],
            "speedup_vs_teacher_onnx": paired["onnx"]["median"], "speedup_vs_teacher_onnx_iqr": paired["onnx"]["iqr"],
            "speedup_rounds": paired["torch"]["rounds"],
            "speedup_calls_per_timing": {k: v["calls_per_timing"] for k, v in paired.items()},
            # one intra-op thread for both models (per core): insensitive to other load on the machine
            "speedup_vs_teacher_1thread": paired["torch_1thread"]["median"],
            "speedup_vs_teacher_1thread_iqr": paired["torch_1thread"]["iqr"],
            "speedup_vs_teacher_onnx_1thread": paired["onnx_1thread"]["median"],
            "speedup_vs_teacher_onnx_1thread_iqr": paired["onnx_1thread"]["iqr"],
            # what else ran on the machine during each paired timing (vhrfm.distill.efficiency.machine_load)
            "speedup_machine_load": {k: v["machine"] for k, v in paired.items()},
            "speedup_vs_teacher_unpaired": round(t_lat / e["cpu_latency_ms"], 3),
            "speedup_vs_teacher_onnx_unpaired": round(eff["teacher"]["onnx_latency_ms"] / e["onnx_latency_ms"], 3),
            # throughput at the profile's bench batch (32 but in smoke; PyTorch), paired like batch one: where
            # per-call overhead is shared by the batch, the FLOP advantage shows more than at batch one
            "throughput_batch": d["bench_batch"], "cpu_images_per_s_batch": e[tput],
            "speedup_vs_teacher_batch": paired[batch_key]["median"], "speedup_vs_teacher_batch_iqr": paired[batch_key]["iqr"],
            "speedup_vs_teacher_batch_rounds": paired[batch_key]["rounds"],
            "speedup_vs_teacher_batch_unpaired": round(e[tput] / eff["teacher"][tput], 3),
            "onnx_max_abs_diff": e["onnx_max_abs_diff"], "onnx_int8_cosine_to_torch": e["onnx_int8_cosine_to_torch"],
            "probe_linear_acc_kd": mean_over_tasks(probe, f"kd_{s}"),
            "probe_linear_acc_ssl_scratch": mean_over_tasks(probe, f"ssl_{s}"),
            "probe_linear_acc_random": mean_over_tasks(probe, f"random_{s}"),
            "probe_retained": mean_over_tasks(probe, f"kd_{s}") / mean_over_tasks(probe, "teacher"),
            **task_scores(profile, s),
        }
    teacher_f1 = {f"f1_{t}": next((v["task_kd"][t]["teacher_f1"] for v in students.values() if v["task_kd"][t]), None)
                  for t in APP_TASKS}
    metrics = {
        "profile": profile, "teacher_encoder": teacher.card["arch"], "bands_for_efficiency": EFFICIENCY_BANDS,
        "input_px": d["bench_size"], "speedup_min_block_ms": d.get("speedup_min_block_ms", 0),
        "speedup_settle_ms": d.get("speedup_settle_ms", 0), "speedup_rewarm_calls": d.get("speedup_rewarm_calls", 0),
        "teacher": {**eff["teacher"], "probe_linear_acc": mean_over_tasks(probe, "teacher"), **teacher_f1},
        "students": students, "goal": goal_check(students),
        "probe": {t: {m: {k: r[k] for k in ("linear_acc", "ci95", "knn_acc", "linear_val_acc", "n_test")} for m, r in by.items()}
                  for t, by in probe.items()},
        "tasks_left_out": dropped,
        "training": runs,
        "training_seconds": round(train_s, 1),
        "efficiency_raw": eff,
        # untrained candidate architectures, timed like the students: what a narrower student would gain in speed
        "architecture_scan": scan,
        # the whole task networks (encoder and head) that `vhrfm predict` runs: teacher and student of each task
        "task_models": task_models,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=float) + "\n")
    return metrics


__all__ = ["run_distillation", "paired_timing", "goal_check", "scan_student", "task_f1", "task_scores", "index_models", "EFFICIENCY_BANDS"]
