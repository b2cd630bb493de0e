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
# # Application — marine megafauna detection with few labels
#
# **Question.** Can animals be detected as points at satellite GSD with high precision, from few labels,
# and does the pretrained encoder help over the same detector trained from scratch and over a classical
# blob detector?
#
# **Data, plainly.** Public satellite megafauna labels are scarce: the store holds 5 WorldView-3 PAN
# chips (0.3 m; one at 0.5 m) with 12 certain and 2 uncertain beluga whales. They are the **satellite
# test set**, never trained or tuned on here (their unlabeled pixels were in the pretraining corpus,
# except the test-split chip). The training data are 1,695 drone tiles of harbor and elephant seals on
# land (12,717 boxes) **degraded to 0.3 m** by averaging 12 x 12 pixels (the drone GSD of ~2.5 cm is not
# stated by the source; it is estimated from the animals' sizes). Their published train / valid / test
# split is parent-photo disjoint and kept; the degraded test split is the larger test set.
#
# **Protocol.** Detection as a centre heat-map (CenterNet-style focal loss) on a dense head, decoded
# by peak finding. A detection is correct within `radius_m` of a labelled centre (one-to-one, greedy by
# score). Label budgets of 10, 25 and 100 % of the training images (nested, seeded, stored). The
# operating threshold of every model is chosen on the degraded validation split (best F1) and applied
# unchanged to both test sets. Beside it, each model's precision and recall on test at the lowest threshold
# reaching the precision target (`precision_target`, 0.9) on validation: how many animals it keeps when it
# must be that sure. (The earlier rule, the best F1 among thresholds reaching the target with a fall-back to
# the best F1, kept 0–9 % of the animals in 17 of the 18 learned model-budget pairs of its last run, and
# compared models at different kinds of point.)
#
# **Models** in the same run (the profile's `models`): the classical blob detector, a U-Net from scratch, the
# teacher with the light dense head (frozen), the teacher fine-tuned under the U-Net's own decoder (`teacher_unet`,
# the same decoder as the U-Net from scratch) and that architecture from random weights (`anyband_unet_scratch`),
# and the compact student of chapter 2 with the light head: from scratch,
# fine-tuned from its self-supervised KD weights, and with task-specific KD (the teacher's heat-maps on
# every training image plus the budget's labels). The heat-map target puts each animal's peak (value 1)
# on the pixel holding its centre, as CenterNet does: the focal loss's positives are those pixels.
# Every learned detector's output bias starts each pixel at probability `heatmap_prior` (0.1, CenterNet's
# -2.19; the focal-loss prior of RetinaNet), so the first steps are not spent learning that most pixels
# hold no animal. (It was added because the U-Net from scratch scored F1 < 0.1; that turned out to come from
# the operating-point rule described above, not from its training: its AP was already the highest.)

# %% tags=["parameters"]
profile = "cpu"

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from vhrfm.apps.megafauna import run_megafauna
from vhrfm.config import load_profile, results_dir
from vhrfm.data.datasets import true_colour

cfg = load_profile(profile)["megafauna"]
out = results_dir(profile) / "megafauna"
fig_dir = out / "figures"
fig_dir.mkdir(parents=True, exist_ok=True)
metrics = run_megafauna(profile)
curves = json.loads((out / "curves.json").read_text())
print(json.dumps({k: metrics[k] for k in ("images", "points", "budgets", "gsd_m", "radius_m")}, indent=1))

# %% [markdown]
# ## From drone to satellite GSD
#
# One seal tile at its drone resolution and after the 12 x 12 area average (0.3 m), with the labelled
# centres; the WorldView-3 chips with their whales (red: certain, orange: uncertain).

# %%
import rasterio

from vhrfm.config import data_dir
from vhrfm.data.sources import get_source

seal = next(it for it in get_source("seals_aerial_drone").items() if len(it.boxes) >= 5)
with rasterio.open(data_dir() / seal.path) as src:
    full = src.read().astype(np.float32)
from vhrfm.apps.megafauna import degrade

small = degrade(full, cfg["degrade"])
b = seal.boxes
cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
wl = np.array([665.0, 560.0, 490.0])
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
axes[0].imshow(true_colour(full, wl))
axes[0].plot(cx, cy, "r+", ms=6)
axes[0].set_title(f"drone tile, ~{seal.gsd} m ({full.shape[1]} px)", fontsize=8)
axes[1].imshow(true_colour(small, wl), interpolation="nearest")
axes[1].plot(cx / cfg["degrade"] - 0.5, cy / cfg["degrade"] - 0.5, "r+", ms=6)
axes[1].set_title(f"degraded x{cfg['degrade']}: {seal.gsd * cfg['degrade']:.2f} m ({small.shape[1]} px)", fontsize=8)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "degradation.png", dpi=110)

dets = json.loads((out / "detections.json").read_text())
sat = dets["satellite"]
ex = np.load(out / "examples.npz")
fig, axes = plt.subplots(2, len(sat["paths"]), figsize=(3.2 * len(sat["paths"]), 6.6), squeeze=False)
for j, path in enumerate(sat["paths"]):
    img = ex["sat_images"][j, 0]
    for row in (0, 1):
        ax = axes[row, j]
        ax.imshow(img, cmap="gray", vmin=np.percentile(img, 1), vmax=np.percentile(img, 99.5))
        pts, ign = np.array(sat["points"][j]).reshape(-1, 2), np.array(sat["ignore"][j]).reshape(-1, 2)
        ax.plot(pts[:, 1], pts[:, 0], "o", mfc="none", mec="red", ms=12)
        ax.plot(ign[:, 1], ign[:, 0], "o", mfc="none", mec="orange", ms=12)
        if row == 1:
            d = np.array(sat["dets"][j]).reshape(-1, 3)
            d = d[d[:, 2] >= metrics["best"]["threshold"]]
            ax.plot(d[:, 1], d[:, 0], "c+", ms=8)
        ax.set_title(("WV-3 chip " if row == 0 else "detections (cyan), ") + f"{sat['gsd'][j]} m", fontsize=7)
        ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "satellite_chips.png", dpi=100)

# %% [markdown]
# ## Results: degraded seals (test split) and WorldView-3 whales
#
# Precision, recall, F1 at the threshold chosen on validation, average precision (AP), mean absolute
# count error per image; 95 % bootstrap CIs over images.

# %%
rows = []
for where in ("test", "satellite"):
    for model, by in metrics[where].items():
        for budget, r in by.items():
            rows.append({"set": "degraded seals" if where == "test" else "WV-3 whales", "model": model, "budget": budget,
                         "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                         "f1_ci95": "[{:.3f}, {:.3f}]".format(*r.get("f1_ci95", [np.nan, np.nan])), "ap": r["ap"],
                         "count_mae": r["count_mae"], "threshold": r["threshold"],
                         "precision_at_target": (r.get("at_precision_target") or {}).get("precision"),
                         "recall_at_target": (r.get("at_precision_target") or {}).get("recall")})
table = pd.DataFrame(rows)
display(table.round(3))
print("best (chosen on validation F1):", json.dumps(metrics["best"], indent=1))
print("same model on the satellite chips:", json.dumps(metrics["best_satellite"], indent=1))

# %% [markdown]
# ## The goal, checked
#
# Precision >= 0.90 at recall >= 0.80 at the operating point chosen on validation, on the degraded seal
# test split and on the satellite chips, and the foundation model ahead of the from-scratch detector at
# the same label budget.

# %%
g = metrics["goal"]
display(pd.DataFrame(g["fm_vs_scratch_f1"]).T.round(3))
print(f"degraded seals: goal {'met' if g['degraded_ok'] else 'NOT met'}; WorldView-3 whales: goal "
      f"{'met' if g['satellite_ok'] else 'NOT met'}; foundation model ahead of the U-Net from scratch at: "
      f"{[b for b, v in g['fm_vs_scratch_f1'].items() if v['margin'] > 0] or 'no budget'}")

# %% [markdown]
# With the decoder held equal (`teacher_unet`, the same architecture from random weights `anyband_unet_scratch`, and
# `unet_scratch`), test F1 on degraded seals; and the output
# prior on and off: the models below trained again with the output layer's default bias, everything else equal
# (seed, data, steps, threshold rule).

# %%
same_models = [m for m in ("teacher_unet", "anyband_unet_scratch", "unet_scratch") if m in metrics["test"]]
if same_models:
    same = pd.DataFrame({b: {m: metrics["test"][m][b]["f1"] for m in same_models} for b in metrics["test"][same_models[0]]}).T
    if {"teacher_unet", "anyband_unet_scratch"} <= set(same_models):
        same["pretrained - random"] = same.teacher_unet - same.anyband_unet_scratch
    display(same.round(3))
if metrics.get("prior_ablation"):
    ab = metrics["prior_ablation"]
    display(pd.DataFrame({name: {"AP with prior": r["with_prior"]["ap"], "AP without": r["without_prior"]["ap"],
                                 "F1 with prior": r["with_prior"]["f1"], "F1 without": r["without_prior"]["f1"]}
                          for name, r in ab["models"].items()}).T.round(3))

# %% [markdown]
# ## Label-budget curves and precision-recall curves

# %%
budgets = list(metrics["budgets"])
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for model, by in metrics["test"].items():
    f1 = [by[b]["f1"] for b in budgets]
    lo = [by[b]["f1"] - by[b]["f1_ci95"][0] for b in budgets]
    hi = [by[b]["f1_ci95"][1] - by[b]["f1"] for b in budgets]
    axes[0].errorbar(range(len(budgets)), f1, yerr=[lo, hi], marker="o", capsize=3, label=model)
axes[0].set_xticks(range(len(budgets)), [f"{b}\n({metrics['budgets'][b]} images)" for b in budgets])
axes[0].set_ylabel("F1, degraded seals (test, 95% CI)")
axes[0].set_ylim(0, 1)
axes[0].legend(fontsize=7)
ref = budgets[-1]
for ax, where in zip(axes[1:], ("test", "satellite")):
    for model in metrics["test"]:
        c = curves["pr"][f"{model}/{ref}"][where]
        line, = ax.plot(c["recall"], c["precision"], label=model)
        r = metrics[where][model][ref]
        ax.plot(r["recall"], r["precision"], "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{'degraded seals' if where == 'test' else 'WV-3 whales'}, budget {ref}; dots: val thresholds", fontsize=8)
fig.tight_layout()
fig.savefig(fig_dir / "budget_and_pr.png", dpi=110)

# %% [markdown]
# ## Detections on degraded test tiles, and counts

# %%
test = dets["test"]
thr = metrics["best"]["threshold"]
n = min(6, len(ex["test_images"]))
fig, axes = plt.subplots(1, n + 1, figsize=(3 * (n + 1), 3.2), squeeze=False)
for j in range(n):
    ax = axes[0, j]
    ax.imshow(true_colour(ex["test_images"][j], wl), interpolation="nearest")
    pts = np.array(test["points"][j]).reshape(-1, 2)
    d = np.array(test["dets"][j]).reshape(-1, 3)
    d = d[d[:, 2] >= thr]
    ax.plot(pts[:, 1], pts[:, 0], "o", mfc="none", mec="red", ms=7)
    ax.plot(d[:, 1], d[:, 0], "c+", ms=7)
    ax.set_title(f"{len(pts)} labelled, {len(d)} detected", fontsize=7)
    ax.set_axis_off()
true_n = np.array([len(p) for p in test["points"]])
pred_n = np.array([int((np.array(d).reshape(-1, 3)[:, 2] >= thr).sum()) for d in test["dets"]])
ax = axes[0, n]
ax.scatter(true_n, pred_n, s=8, alpha=0.5)
m = max(true_n.max(), pred_n.max(), 1)
ax.plot([0, m], [0, m], "k:", lw=0.8)
ax.set_xlabel("labelled per tile")
ax.set_ylabel("detected per tile")
ax.set_title(f"counts ({metrics['best']['model']} {metrics['best']['budget']})", fontsize=8)
fig.tight_layout()
fig.savefig(fig_dir / "test_detections.png", dpi=100)

# %% [markdown]
# ## Failure cases: the test tiles with the largest count errors

# %%
err = pd.DataFrame({"path": test["paths"], "labelled": true_n, "detected": pred_n}).assign(error=pred_n - true_n)
display(err.reindex(err.error.abs().sort_values(ascending=False).index).head(8))

# %% [markdown]
# ## Cross-domain: aerial-degraded only, satellite only, and both
#
# The chosen model above was trained on degraded drone seals only. The satellite-only and joint (seals +
# satellite chips, batches alternating between the two domains, each with its own bands and GSD) settings
# use the teacher detector named in `params.yaml` (`cross_domain_model`) and **leave-one-chip-out**: each
# of the 5 WorldView-3 chips is predicted by a model trained without it, and the detections of the folds are
# pooled and scored. The satellite-only threshold can only be chosen on its own training chips (optimistic);
# the joint one on the degraded-seal validation split. With 12 whales in total, these are anecdotes with
# very wide uncertainty, reported because the comparison is the question, not because they settle it.

# %%
cd = metrics["cross_domain"]
display(pd.DataFrame({k: {m: v.get(m) for m in ("precision", "recall", "f1", "ap")} for k, v in cd.items()
                      if isinstance(v, dict)}).T.round(3))
print(cd["note"])

# %% [markdown]
# ## Whole chips through the command line's code path
#
# `vhrfm predict --task megafauna CHIP.tif --sensor worldview3` on each WorldView-3 chip: the deployed
# detector (the default of `vhrfm predict`: the student variant and budget with the best validation F1;
# trained on RGB) takes the PAN band through its any-band stem (the U-Net and the classical
# detector have no such option), normalised by the chip's own statistics; windows overlap and
# detections seen twice are merged. The written points are scored against the labels.

# %%
from vhrfm.apps.megafauna import run_scene_check

scene_check = run_scene_check(profile)
if "chips" in scene_check:
    display(pd.DataFrame(scene_check["chips"]).set_index("chip"))
    print({k: round(scene_check[k], 3) for k in ("precision", "recall", "f1")}, "model:", scene_check["model"])
else:
    print("not applicable:", scene_check["not_applicable"])

# %% [markdown]
# ## Timing

# %%
display(pd.DataFrame(metrics["throughput"]).T)

# %% [markdown]
# ## Limits
#
# * The satellite test set is 12 whales in 5 chips: its confidence intervals are very wide, and whales
#   in water differ from seals on beaches in appearance, background and size; the aerial-to-satellite
#   transfer is the hard, honest test here.
# * The seals are degraded drone photographs, not satellite images: no satellite noise, MTF,
#   atmosphere or pansharpening artefacts; the drone GSD itself is an estimate.
# * Satellite-only and joint training (aerial + satellite) run leave-one-chip-out on 5 labelled chips:
#   too few to train or test on with confidence. More public satellite labels are needed (see
#   `docs/data-candidates.md`).
