# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 2 — distillation into compact students
#
# **Question.** How much of the pretrained teacher's representation survives in students small
# enough for fast CPU inference, and at what cost in size and latency?
#
# **Protocol.** Each student (timm backbones with the same any-band spectral stem as the teacher) was
# trained (stage `distill`, before this notebook) on the unlabeled pretraining corpus by **self-supervised KD**: the student's feature map,
# through a small projector, should match the frozen teacher's (1 - cosine per location), plus a
# similarity-preserving term over the batch. The same student is also trained with the teacher's own
# SSL objective (contrastive) **from scratch** for the same number of steps, and left at random
# initialisation: all are probed on the chapter-1 tasks in the same run. Efficiency is measured on this
# machine for RGB tiles: parameters, FLOPs, size in fp32 / fp16 / int8, CPU latency at batch 1 and
# throughput at batch 32 (PyTorch), the ONNX export's parity and latency (onnxruntime), and int8 by
# ONNX Runtime's dynamic quantisation.
#
# **Task-specific KD** runs inside the application chapters (stages `wildfire` and `megafauna`, before
# this notebook), one student architecture (`student` in `params.yaml`) at every label budget, in three
# variants: from scratch, fine-tuned from its self-supervised KD weights, and fine-tuned with the teacher's
# soft outputs (burned probabilities, centre heat-maps) on every training image as well as the labels
# (`vhrfm.distill.task`). This notebook gathers their test F1: `f1_retained` is the task-KD student's F1 over
# the distilled teacher's at the largest budget, averaged over the two tasks.

# %% tags=["parameters"]
profile = "cpu"

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from vhrfm.config import load_profile, results_dir
from vhrfm.distill.run import run_distillation

cfg_all = load_profile(profile)
cfg = cfg_all["distill"]
out = results_dir(profile) / "distillation"
fig_dir = out / "figures"
fig_dir.mkdir(parents=True, exist_ok=True)
metrics = run_distillation(profile)
print("teacher:", metrics["teacher_encoder"], "| students:", ", ".join(metrics["students"]))

# %% [markdown]
# ## Probe accuracy: KD against SSL from scratch and random initialisation (same student, same steps)

# %%
rows = []
for t, by in metrics["probe"].items():
    for m, r in by.items():
        rows.append({"task": t, "model": m, "linear_acc": r["linear_acc"], "ci95": "[{:.3f}, {:.3f}]".format(*r["ci95"])})
display(pd.DataFrame(rows).pivot(index="model", columns="task", values="linear_acc").round(3))
summary = pd.DataFrame({s: {"KD from teacher": v["probe_linear_acc_kd"], "SSL from scratch": v["probe_linear_acc_ssl_scratch"],
                            "random init": v["probe_linear_acc_random"], "retained vs teacher": v["probe_retained"]}
                        for s, v in metrics["students"].items()}).T
summary.loc["teacher", "KD from teacher"] = metrics["teacher"]["probe_linear_acc"]
display(summary.round(3))

fig, ax = plt.subplots(figsize=(7, 3.6))
names = list(metrics["students"])
x = np.arange(len(names))
for k, (col, colour) in enumerate((("KD from teacher", "tab:blue"), ("SSL from scratch", "tab:orange"), ("random init", "grey"))):
    ax.bar(x + (k - 1) * 0.27, [summary.loc[n, col] for n in names], 0.27, label=col, color=colour)
ax.axhline(metrics["teacher"]["probe_linear_acc"], color="k", ls="--", lw=1, label=f"teacher ({metrics['teacher_encoder']})")
ax.set_xticks(x, [n.replace("_anyband", "") for n in names])
ax.set_ylabel("mean linear-probe accuracy (test)")
ax.set_ylim(0.4, 1)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(fig_dir / "probe_students.png", dpi=110)

# %% [markdown]
# ## Efficiency, measured on this machine

# %%
eff = pd.DataFrame({n: {k: e[k] for k in ("params", "flops_per_image", "size_mb_fp32", "size_mb_fp16", "size_mb_int8",
                                          "cpu_latency_ms", f"cpu_images_per_s_b{cfg['bench_batch']}", "onnx_latency_ms",
                                          "onnx_int8_latency_ms", "onnx_max_abs_diff", "onnx_int8_cosine_to_torch",
                                          "size_mb_int8_static", "onnx_int8_static_latency_ms",
                                          "onnx_int8_static_cosine_to_torch")}
                    for n, e in metrics["efficiency_raw"].items()}).T
display(eff)
display(pd.DataFrame(metrics["students"]).T[["params", "size_mb_int8", "cpu_latency_ms", "speedup_vs_teacher",
                                             "speedup_vs_teacher_onnx", "speedup_vs_teacher_batch",
                                             "speedup_vs_teacher_1thread", "speedup_vs_teacher_onnx_1thread",
                                             "speedup_vs_teacher_onnx_int8_static_unpaired",
                                             "speedup_fastest_vs_teacher_fastest_unpaired", "probe_retained"]])

# %% [markdown]
# Two int8 graphs: ONNX Runtime's dynamic quantisation (`onnx_int8_*`) quantises activations at run time; the
# static one (`onnx_int8_static_*`) fixes the activation ranges on real Pleiades windows and runs integer
# convolutions. Whether int8 is faster than fp32 depends on the network and the CPU; where it helps the teacher
# more than a student, the student's lead shrinks once both are quantised. The last two columns above are the
# speed-up with both in static int8, and with each in its faster ONNX precision (fp32 or static int8), from
# separately measured latencies; `make bench` (quant) times the same comparisons in paired rounds.

# %%
for n, e in {"teacher": metrics["teacher"], **{s: metrics["efficiency_raw"][f"kd_{s}"] for s in metrics["students"]}}.items():
    print(f"{n} ONNX Runtime: fp32 {e['onnx_latency_ms']:.1f} ms, dynamic int8 {e['onnx_int8_latency_ms']:.1f} ms "
          f"({e['onnx_latency_ms'] / e['onnx_int8_latency_ms']:.2f}x fp32), static int8 {e['onnx_int8_static_latency_ms']:.1f} ms "
          f"({e['onnx_latency_ms'] / e['onnx_int8_static_latency_ms']:.2f}x fp32, cosine to PyTorch "
          f"{e['onnx_int8_static_cosine_to_torch']:.4f})")

# %% [markdown]
# ## Task-specific KD: the student on wildfire and megafauna, at every label budget
#
# Test F1 of the teacher variant distilled at each budget (the better one on validation), and of the same
# student architecture from scratch, fine-tuned from its self-supervised KD weights, and with task KD. The three
# student variants train for `student_steps`, three times the teachers' `steps` (printed below): a student step
# costs a fraction of a teacher step, and the students were still learning at the teachers' schedule
# (`scripts/student_kd_study.py`, `results/studies/student_kd_steps.json`: validation F1 over three seeds).

# %%
task_rows = []
for task in ("wildfire", "megafauna"):
    tm = json.loads((results_dir(profile) / task / "metrics.json").read_text())
    block = tm.get("distillation") or {}
    if block.get("steps"):
        print(f"{task}: teachers {block['steps']['teacher']} steps, students {block['steps']['student']}")
    for b, r in (block.get("by_budget") or {}).items():
        task_rows.append({"task": task, "budget": b, "fraction": cfg_all[task]["budgets"][b], "student": block["student"], **r})
task_kd = pd.DataFrame(task_rows)
if len(task_kd):
    task_kd = task_kd.sort_values(["task", "fraction"], ascending=[False, True]).drop(columns="fraction")
display(task_kd.round(3) if len(task_kd) else "no task-KD runs in the application metrics")
display(pd.DataFrame({s: {k: v[k] for k in ("f1_wildfire", "f1_megafauna", "f1_retained")} for s, v in metrics["students"].items()}).T)
print("teacher F1 (largest budget):", {k: metrics["teacher"].get(k) for k in ("f1_wildfire", "f1_megafauna")})
print("goal (<= 2 M params, <= 5 MB int8, >= 20x faster, >= 95 % of the teacher's F1 on each task);"
      " met reads the speed in PyTorch, met_onnx with both models in ONNX Runtime, met_onnx_1thread there at one"
      " thread per model (a reading another busy process leaves as it is):",
      json.dumps(metrics["goal"]["students"], indent=1))

if len(task_kd):
    variants = [c for c in ("teacher_f1", "student_scratch_f1", "student_finetuned_f1", "student_taskkd_f1") if c in task_kd]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, (task, df) in zip(axes, task_kd.groupby("task", sort=False)):
        for c in variants:
            ax.plot(df.budget, df[c], "o-", label=c.removesuffix("_f1").replace("_", " "))
        ax.set_title(task)
        ax.set_xlabel("label budget")
    axes[0].set_ylabel("test F1")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "task_kd.png", dpi=110)

# %% [markdown]
# ## Accuracy against latency (marker area: int8 size)
#
# Left: the mean linear-probe accuracy of the encoders. Right: the task F1 (mean of wildfire and megafauna at
# the largest budget) of the teacher and of each student that the applications trained with task KD.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
pts = {"teacher": (metrics["teacher"]["cpu_latency_ms"], metrics["teacher"]["probe_linear_acc"], metrics["teacher"]["size_mb_int8"])}
pts.update({s: (v["cpu_latency_ms"], v["probe_linear_acc_kd"], v["size_mb_int8"]) for s, v in metrics["students"].items()})


def task_mean(v):
    f = [v.get("f1_wildfire"), v.get("f1_megafauna")]
    return None if None in f else sum(f) / 2


task_pts = {"teacher": (metrics["teacher"]["cpu_latency_ms"], task_mean(metrics["teacher"]), metrics["teacher"]["size_mb_int8"])}
task_pts.update({s: (v["cpu_latency_ms"], task_mean(v), v["size_mb_int8"]) for s, v in metrics["students"].items()})
for ax, points, label in ((axes[0], pts, "mean linear-probe accuracy"), (axes[1], task_pts, "task F1 (mean of the two tasks)")):
    for n, (lat, acc, mb) in points.items():
        if acc is None:
            continue
        ax.scatter(lat, acc, s=40 * mb + 10, alpha=0.6)
        ax.annotate(n.replace("_anyband", ""), (lat, acc), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU latency, batch 1, {metrics['input_px']} px RGB (ms)")
    ax.set_ylabel(label)
fig.tight_layout()
fig.savefig(fig_dir / "pareto.png", dpi=110)

# %% [markdown]
# ## The task networks as `vhrfm predict` runs them
#
# The speed-ups above compare encoders. An analyst waits for the whole task network: encoder and dense head, on
# the task's tiles. Here the teacher and the student that each task's `index.json` names, at batch one, timed
# like the encoders; `speedup_onnx_vs_torch` is each network in ONNX Runtime against itself in PyTorch
# (`vhrfm predict --runtime onnx`), and `encoder_flops_share` is the encoder's part of the FLOPs.

# %%
tm_rows = {(task, role): r for task, block in metrics["task_models"].items() for role, r in block["models"].items()}
if tm_rows:
    display(pd.DataFrame(tm_rows).T[["model", "params", "flops_per_image", "encoder_flops_share", "cpu_latency_ms",
                                     "onnx_latency_ms", "speedup_torch", "speedup_onnx", "speedup_onnx_vs_torch"]])
else:
    print("no task models in models/*/index.json")

# %% [markdown]
# ## Which architecture could reach the speed target? (untrained candidates)
#
# The speed of a forward pass does not depend on the weights' values, so narrower networks can be timed before
# any is distilled: each timm network of `scan` in `params.yaml`, with the any-band stem, at random
# initialisation, timed against the teacher exactly like the trained students (alternating blocks of calls, in
# PyTorch and in ONNX Runtime). The scan starts with the trained students' timm networks (`vhrfm_tinyres16` is
# `tinyres16_anyband`, `mobilenetv3_small_100` is `mobilenetv3_small_anyband`): their untrained speed-ups should
# match the trained ones above, a check of the method. The `vhrfm_tinyres` networks (`vhrfm.models.tinyres`: one
# dense ResNet basic block per stage) against the depthwise mobile networks (MobileNetV3, LCNet, MobileNetV4): at
# batch one on two cores, does speed follow FLOPs or the number of operations? The dashed line is the chapter's
# twenty-fold target.

# %%
scan = pd.DataFrame(metrics["architecture_scan"]).T
if len(scan):
    scan["gflops"] = scan.flops_per_image.astype(float) / 1e9
    display(scan[["params", "gflops", "size_mb_fp32", "speedup_torch", "speedup_torch_iqr", "speedup_onnx",
                  "speedup_onnx_iqr"]])
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for rt, marker in (("torch", "o"), ("onnx", "s")):
        lo = [q[0] for q in scan[f"speedup_{rt}_iqr"]]
        hi = [q[1] for q in scan[f"speedup_{rt}_iqr"]]
        y = scan[f"speedup_{rt}"].astype(float)
        ax.errorbar(scan.gflops, y, yerr=[y - lo, np.array(hi) - y], fmt=marker, capsize=3,
                    label="PyTorch" if rt == "torch" else "ONNX Runtime")
    for n, r in scan.iterrows():
        ax.annotate(n, (r.gflops, r.speedup_onnx), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(metrics["goal"]["targets"]["speedup_vs_teacher"], ls="--", c="k", lw=0.8)
    ax.set_xlabel(f"GFLOPs per {metrics['input_px']} px RGB image")
    ax.set_ylabel("speed-up over the teacher, batch 1 (median, IQR)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "architecture_scan.png", dpi=110)

# %% [markdown]
# ## Training curves

# %%
import pandas as pd

from vhrfm.config import models_dir

fig, ax = plt.subplots(figsize=(7, 3.4))
for s in metrics["students"]:
    log = pd.read_csv(models_dir(profile) / "distill" / f"kd_{s}_log.csv")
    ax.plot(log.step, log.loss, label=f"KD {s.replace('_anyband', '')}")
ax.set_xlabel("step")
ax.set_ylabel("KD loss")
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(fig_dir / "kd_loss.png", dpi=110)

# %% [markdown]
# ## Limits
#
# * Task KD trains one student architecture (`student` in `params.yaml`); the other students' task F1 is not
#   measured (`null` in the metrics). The KD weight is set, not tuned.
# * The teacher is itself small (a ResNet-18 on the `cpu` profile): the speed-up a student can bring is
#   bounded by that, and CPU latency at batch 1 is dominated by per-layer overheads for tiny networks.
# * KD and SSL-from-scratch run for a few hundred steps on two CPU cores; probe differences within the
#   confidence intervals are not evidence.
# * An ONNX file is exported for one band set (the spectral stem folded into a plain convolution); the
#   PyTorch student accepts any band set.
# * Paired timings start after an idle pause (`speedup_settle_ms`): ONNX Runtime's worker threads spin after a
#   call, and without it the other model's threads shared the two cores with the one being timed, which lowered
#   and spread the smaller network's ONNX speed-up (`scripts/student_speed_study.py` measures it with and without
#   the pause).
# * int8 is dynamic quantisation in ONNX Runtime, whose integer convolutions can be slower than fp32 on
#   some CPUs: the table reports what this machine measured.
