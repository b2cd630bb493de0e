"""The distillation stage: self-supervised KD of the teacher into each student, the same students trained with
SSL from scratch, chapter-1 probes for all, and every model's efficiency measured on this machine."""

from __future__ import annotations

import json
import time

from vhrfm.checkpoint import load_encoder
from vhrfm.config import load_profile, models_dir, results_dir
from vhrfm.data.sources import SOURCES
from vhrfm.ssl.evaluate import mean_over_tasks, probe_all, probe_tasks, random_encoder
from vhrfm.ssl.run import corpus_for, method_config
from vhrfm.ssl.train import pretrain

# the probe band set for efficiency figures: Pleiades RGB at 0.5 m (the aircraft task's imagery)
EFFICIENCY_BANDS = {"sensor": "pleiades", "bands": ("red", "green", "blue"), "gsd": 0.5}


def kd_config(profile: str, student: str, objective: str) -> dict:
    """Pretraining settings of the profile with the distillation section's overrides, for one student."""
    d = load_profile(profile)["distill"]
    _, base = method_config(profile, next(iter(load_profile(profile)["pretrain"]["methods"])))
    cfg = {**base, "encoder": student, "steps": d["steps"], "batch_size": d["batch_size"], "crop": d["crop"], "lr": d["lr"],
           "warmup_steps": d["warmup_steps"], "ckpt_every": d["steps"], "log_every": max(1, d["steps"] // 20)}
    if objective == "distill":
        cfg.update(teacher=str(models_dir(profile) / "teacher.safetensors"), cos_weight=d["cos_weight"],
                   rel_weight=d["rel_weight"])
    return cfg


def run_distillation(profile: str, progress: bool = True) -> dict:
    from vhrfm.distill.efficiency import measure
    from vhrfm.sensors import get_sensor

    p = load_profile(profile)
    d, seed = p["distill"], p["seed"]
    out_models = models_dir(profile) / "distill"
    out = results_dir(profile) / "distillation"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus, stats = corpus_for(profile, progress)
    used = {pc.key for pc in corpus.products}
    extra = {"training_data": [{"source": s.id, "licence": s.licence, "attribution": s.attribution}
                               for s in SOURCES.values() if any(k.startswith(s.id + "/") for k in used)],
             "normalisation": {k: {f: stats[k][f] for f in ("sensor", "bands", "wavelengths", "mean", "std")} for k in sorted(used)},
             "command": f"dvc repro distill@{profile}"}
    runs = {}
    for student in d["students"]:
        for kind, objective in (("kd", "distill"), ("ssl", "contrastive")):
            name = f"{kind}_{student}"
            runs[name] = pretrain(name, objective, kd_config(profile, student, objective), corpus, out_models, seed=seed,
                                  card_extra={**extra, "distilled_from": "teacher" if kind == "kd" else None},
                                  progress=progress)
    train_s = time.perf_counter() - t0
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
    for name in ["teacher", *[f"kd_{s}" for s in d["students"]]]:
        eff[name] = measure(encoders[name], wl, wd, EFFICIENCY_BANDS["gsd"], size=d["bench_size"], batch=d["bench_batch"],
                            repeats=d["bench_repeats"], seed=seed)
    t_lat = eff["teacher"]["cpu_latency_ms"]
    students = {}
    for s in d["students"]:
        e = eff[f"kd_{s}"]
        students[s] = {
            "encoder": s, "params": e["params"], "flops_per_image": e["flops_per_image"],
            "size_mb_fp32": e["size_mb_fp32"], "size_mb_fp16": e["size_mb_fp16"], "size_mb_int8": e["size_mb_int8"],
            "cpu_latency_ms": e["cpu_latency_ms"], "onnx_latency_ms": e["onnx_latency_ms"],
            "onnx_int8_latency_ms": e["onnx_int8_latency_ms"],
            "speedup_vs_teacher": round(t_lat / e["cpu_latency_ms"], 3),
            "speedup_vs_teacher_onnx": round(eff["teacher"]["onnx_latency_ms"] / e["onnx_latency_ms"], 3),
            "onnx_max_abs_diff": e["onnx_max_abs_diff"], "onnx_int8_cosine_to_torch": e["onnx_int8_cosine_to_torch"],
            "probe_linear_acc_kd": mean_over_tasks(probe, f"kd_{s}"),
            "probe_linear_acc_ssl_scratch": mean_over_tasks(probe, f"ssl_{s}"),
            "probe_linear_acc_random": mean_over_tasks(probe, f"random_{s}"),
            "probe_retained": mean_over_tasks(probe, f"kd_{s}") / mean_over_tasks(probe, "teacher"),
            # task-specific KD (wildfire, megafauna) is the next slice: not measured yet
            "f1_wildfire": None, "f1_megafauna": None, "f1_retained": None,
        }
    metrics = {
        "profile": profile, "teacher_encoder": teacher.card["arch"], "bands_for_efficiency": EFFICIENCY_BANDS,
        "input_px": d["bench_size"], "teacher": {**eff["teacher"], "probe_linear_acc": mean_over_tasks(probe, "teacher")},
        "students": students,
        "probe": {t: {m: {k: r[k] for k in ("linear_acc", "ci95", "knn_acc", "linear_val_acc", "n_test")} for m, r in by.items()}
                  for t, by in probe.items()},
        "tasks_left_out": dropped,
        "training": {n: {k: r[k] for k in ("steps", "final_loss", "seconds_this_run")} for n, r in runs.items()},
        "training_seconds": round(train_s, 1),
        "efficiency_raw": eff,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=float) + "\n")
    return metrics


__all__ = ["run_distillation", "kd_config", "EFFICIENCY_BANDS"]
