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
# **Protocol.** Each student (timm backbones with the same any-band spectral stem as the teacher) is
# trained on the unlabeled pretraining corpus by **self-supervised KD**: the student's feature map,
# through a small projector, should match the frozen teacher's (1 - cosine per location), plus a
# similarity-preserving term over the batch. The same student is also trained with the teacher's own
# SSL objective (contrastive) **from scratch** for the same number of steps, and left at random
# initialisation: all are probed on the chapter-1 tasks in the same run. Efficiency is measured on this
# machine for RGB tiles: parameters, FLOPs, size in fp32 / fp16 / int8, CPU latency at batch 1 and
# throughput at batch 32 (PyTorch), the ONNX export's parity and latency (onnxruntime), and int8 by
# ONNX Runtime's dynamic quantisation.
#
# **Not yet here:** task-specific KD (wildfire masks, megafauna heat-maps), so `f1_retained` is not
# measured in this slice.

# %% tags=["parameters"]
profile = "cpu"

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from vhrfm.config import load_profile, results_dir
from vhrfm.distill.run import run_distillation

cfg = load_profile(profile)["distill"]
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
                                          "onnx_int8_latency_ms", "onnx_max_abs_diff", "onnx_int8_cosine_to_torch")}
                    for n, e in metrics["efficiency_raw"].items()}).T
display(eff)
display(pd.DataFrame(metrics["students"]).T[["params", "size_mb_int8", "cpu_latency_ms", "speedup_vs_teacher",
                                             "speedup_vs_teacher_onnx", "probe_retained"]])

# %% [markdown]
# ## Accuracy against latency (marker area: int8 size)

# %%
fig, ax = plt.subplots(figsize=(6, 4))
pts = {"teacher": (metrics["teacher"]["cpu_latency_ms"], metrics["teacher"]["probe_linear_acc"], metrics["teacher"]["size_mb_int8"])}
pts.update({s: (v["cpu_latency_ms"], v["probe_linear_acc_kd"], v["size_mb_int8"]) for s, v in metrics["students"].items()})
for n, (lat, acc, mb) in pts.items():
    ax.scatter(lat, acc, s=40 * mb + 10, alpha=0.6)
    ax.annotate(n.replace("_anyband", ""), (lat, acc), fontsize=7, xytext=(4, 4), textcoords="offset points")
ax.set_xscale("log")
ax.set_xlabel(f"CPU latency, batch 1, {metrics['input_px']} px RGB (ms, PyTorch, this machine)")
ax.set_ylabel("mean linear-probe accuracy")
fig.tight_layout()
fig.savefig(fig_dir / "pareto.png", dpi=110)

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
# * The teacher is itself small (a ResNet-18 on the `cpu` profile): the speed-up a student can bring is
#   bounded by that, and CPU latency at batch 1 is dominated by per-layer overheads for tiny networks.
# * KD and SSL-from-scratch run for a few hundred steps on two CPU cores; probe differences within the
#   confidence intervals are not evidence.
# * An ONNX file is exported for one band set (the spectral stem folded into a plain convolution); the
#   PyTorch student accepts any band set.
# * int8 is dynamic quantisation in ONNX Runtime, whose integer convolutions can be slower than fp32 on
#   some CPUs: the table reports what this machine measured.
