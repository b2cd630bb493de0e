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
# # Application — rapid wildfire mapping with few labels
#
# **Question.** With a handful of labelled tiles, how well can burned area be mapped, and does the
# pretrained encoder help over a U-Net trained from scratch and over a classical spectral threshold?
#
# **Data, plainly.** No public VHR (< 2 m) burned-area masks with a redistributable licence were found
# (see `docs/data-candidates.md`). The labelled benchmark is therefore the Copernicus EMS activation
# EMSR382 (Gran Canaria, August 2019): two Sentinel-2 tiles at **10 m**, an 8-bit true-colour render,
# with burned-area masks; clouds, light cloud / smoke and shadows are masked out (ignored). The data
# module is sensor-agnostic (a VHR raster with a mask plugs in unchanged; a test proves it on a
# synthetic VHR scene), but every number below is at 10 m, not VHR. No pre-fire image of the same
# ground is in the store, so only post-fire input is evaluated (the classical change index exists for
# when one is).
#
# **Protocol.** Tiles from the stored spatially disjoint split. This 10 m source has its own tiling
# (`data.per_source` in `params.yaml`): 1.28 km tiles in 2.56 km blocks, 40 blocks over the two scenes
# instead of 12, and the validation and test blocks are drawn *stratified* by each block's burned share
# (one block per stratum of the sorted shares), so that neither holds only a couple of mostly-burned blocks,
# which had let an "everything burned" threshold win on validation. Nested label budgets of 1, 5, 10 and
# 100 % of the training tiles (seeded, stored in `budgets.json`; the first tile of the order is the first
# one holding both classes, so even the smallest budget shows burned and unburned ground, as an analyst
# labelling a single tile would pick one across the fire's edge); every model's operating threshold is
# chosen on validation (best F1 among thresholds with precision >= the target), metrics on test with
# bootstrap 95 % CIs over tiles.
#
# **Models** in the same run (the profile's `models`): the classical index, a U-Net from scratch, the teacher with
# the light dense (feature-pyramid) head, frozen, the teacher fine-tuned under the U-Net's own decoder
# (`teacher_unet`: the same decoder as the U-Net from scratch) and that architecture from random weights
# (`anyband_unet_scratch`, the control that isolates the pretrained weights), and the compact student of chapter 2 with the light head: from
# scratch, fine-tuned from its self-supervised KD weights, and with task-specific KD from the teacher (the
# teacher's soft burned probabilities on every training tile, labelled or not, plus the budget's labels).

# %% tags=["parameters"]
profile = "cpu"

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from vhrfm.apps.wildfire import load_test_predictions, run_wildfire
from vhrfm.config import load_profile, results_dir
from vhrfm.data.datasets import true_colour

cfg = load_profile(profile)
out = results_dir(profile) / "wildfire"
fig_dir = out / "figures"
fig_dir.mkdir(parents=True, exist_ok=True)
metrics = run_wildfire(profile)
curves = json.loads((out / "curves.json").read_text())
print(json.dumps({k: metrics[k] for k in ("sensor", "gsd_m", "tiles", "budgets")}, indent=1))

# %% [markdown]
# ## Results on the test split
#
# Precision, recall, F1 and IoU of the burned class at the threshold chosen on validation.

# %%
rows = []
for model, by in metrics["test"].items():
    for budget, r in by.items():
        rows.append({"model": model, "budget": budget, "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                     "f1_ci95": "[{:.3f}, {:.3f}]".format(*r["f1_ci95"]), "iou": r["iou"], "threshold": r["threshold"]})
table = pd.DataFrame(rows)
display(table.round(3))
print("best (chosen on validation F1, budgets <= 10 %):", json.dumps(metrics["best"], indent=1))

# %% [markdown]
# ## The goal, checked
#
# Precision >= 0.90 and F1 >= 0.85 on test with at most 10 % of the labels (model chosen on validation),
# and the foundation model (the teacher variant with the best validation F1) at least 5 F1 points above the
# U-Net from scratch at each such budget.

# %%
g = metrics["goal"]
display(pd.DataFrame(g["fm_vs_baseline"]).T.round(3))
verdict = "MET" if g["precision_ok"] and g["f1_ok"] and g["fm_margin_ok"] else "NOT MET"
print(f"goal {verdict}: precision target {'reached' if g['precision_ok'] else 'not reached'}, F1 target "
      f"{'reached' if g['f1_ok'] else 'not reached'}, foundation model "
      f"{'ahead of' if g['fm_margin_ok'] else 'not 5 F1 points ahead of'} the U-Net from scratch at every budget <= 10 %")

# %% [markdown]
# The operating points above are each model's best validation F1. An analyst who needs nine in ten mapped pixels to
# be burned asks another question: at the lowest validation threshold reaching the precision target
# (`precision_target` of the profile, printed below), what precision and recall does each model get on test? Empty
# where validation never reaches the target.

# %%
print(f"precision target: {cfg['wildfire']['precision_target']}")
target_rows = {}
for model, by in metrics["test"].items():
    for b in g["targets"]["budgets"]:
        t = by[b].get("at_precision_target") or {}
        target_rows[(model, b)] = {"val threshold": t.get("threshold"), "test precision": t.get("precision"),
                                   "test recall": t.get("recall"), "test F1": t.get("f1")}
if any(r["val threshold"] is not None for r in target_rows.values()):
    display(pd.DataFrame(target_rows).T.astype(float).round(3))
else:
    print("no model reaches the precision target on validation at any budget <= 10 %")

# %% [markdown]
# With the decoder held equal: the teacher under the U-Net decoder (`teacher_unet`), the same architecture from
# random weights (`anyband_unet_scratch`) and the U-Net from scratch, test F1 per budget. `pretrained - random`
# is what the pretrained weights add with everything else equal (positive: pretraining helped).

# %%
same_models = [m for m in ("teacher_unet", "anyband_unet_scratch", "unet_scratch") if m in metrics["test"]]
same = pd.DataFrame({b: {m: metrics["test"][m][b]["f1"] for m in same_models} for b in metrics["budgets"]}).T
if {"teacher_unet", "anyband_unet_scratch"} <= set(same_models):
    same["pretrained - random"] = same.teacher_unet - same.anyband_unet_scratch
display(same.round(3))

# %% [markdown]
# One seed is a weak basis for such differences: at one budget, each variant trained with several seeds (the seed
# sets the initial weights and the training crops; the labelled tiles stay the budget's). Where the profile runs it,
# `teacher_unet_slow_encoder` fine-tunes the pretrained encoder at a tenth of the learning rate (the convention before
# this study; the main table's fine-tuned teachers now use the full rate, as the random encoder is trained).

# %%
if metrics.get("pretraining_ablation"):
    ab = metrics["pretraining_ablation"]
    print(f"budget {ab['budget']}, seeds {ab['seeds']}, {ab['steps']} steps")
    display(pd.DataFrame({name: {"encoder lr factor": v["encoder_lr_scale"], "test F1 mean": v["f1_mean"],
                                 "test F1 sd": v["f1_sd"], "test precision mean": v["precision_mean"],
                                 "val F1 mean": v["val_f1_mean"], **{f"test F1 seed {r['seed']}": r["f1"] for r in v["runs"]}}
                          for name, v in ab["variants"].items()}).T.round(3))

# %% [markdown]
# The same seeds read another way: averaging their probabilities makes one model (an ensemble), and averaging each
# model's probabilities over the 8 rotations and flips of a tile (D4 test-time augmentation: nadir imagery has no
# up) is a cheaper version of the same idea. Both are scored like the main table: threshold on validation, test with
# its 95 % CI, and the precision-target point. Neither changes the deployed model; they measure how much of the gap
# to the goal is the noise of one short training run.

# %%
if (metrics.get("pretraining_ablation") or {}).get("ensemble"):
    ens_rows = {}
    for name, v in ab["variants"].items():
        ens_rows[(name, "one seed (mean)")] = {"test F1": v["f1_mean"], "test precision": v["precision_mean"]}
        ens_rows[(name, "one seed + TTA (mean)")] = {"test F1": v["f1_tta_mean"], "test precision": v["precision_tta_mean"]}
        for key, label in (("ensemble", f"ensemble of {len(v['runs'])}"),
                           ("ensemble_tta", f"ensemble of {len(v['runs'])} + TTA")):
            e, t = v[key], v[key].get("at_precision_target") or {}
            ens_rows[(name, label)] = {"test F1": e["f1"], "test F1 CI low": e["f1_ci95"][0],
                                       "test F1 CI high": e["f1_ci95"][1], "test precision": e["precision"],
                                       "test recall": e["recall"], "val F1": e["val_f1"],
                                       "at target: test precision": t.get("precision"),
                                       "at target: test recall": t.get("recall"), "at target: test F1": t.get("f1")}
    display(pd.DataFrame(ens_rows).T.astype(float).round(3))
    ens_ok = [(n, k) for n, v in ab["variants"].items() for k in ("ensemble", "ensemble_tta")
              if v[k]["precision"] >= g["targets"]["precision"] and v[k]["f1"] >= g["targets"]["f1"]]
    print("reaching the goal's precision and F1 together at the best-F1 threshold: "
          + (", ".join(f"{n} {k}" for n, k in ens_ok) if ens_ok else "none"))

# %% [markdown]
# ## Label-budget curves

# %%
budgets = list(metrics["budgets"])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for model, by in metrics["test"].items():
    f1 = [by[b]["f1"] for b in budgets]
    lo = [by[b]["f1"] - by[b]["f1_ci95"][0] for b in budgets]
    hi = [by[b]["f1_ci95"][1] - by[b]["f1"] for b in budgets]
    axes[0].errorbar(range(len(budgets)), f1, yerr=[lo, hi], marker="o", capsize=3, label=model)
    axes[1].plot(range(len(budgets)), [by[b]["precision"] for b in budgets], marker="o", label=model)
for ax, name in zip(axes, ("F1 (test, 95% CI)", "precision (test)")):
    ax.set_xticks(range(len(budgets)), [f"{b}\n({metrics['budgets'][b]} tiles)" for b in budgets])
    ax.set_ylabel(name)
    ax.set_ylim(0, 1)
axes[1].axhline(g["targets"]["precision"], color="k", ls=":", lw=0.8)  # the goal's precision
axes[0].legend(fontsize=7)
fig.tight_layout()
fig.savefig(fig_dir / "budget_curves.png", dpi=110)

# %% [markdown]
# ## Precision-recall curves (test, 10 % budget) and the chosen operating points

# %%
ref_budget = "10%" if "10%" in budgets else budgets[-1]
fig, ax = plt.subplots(figsize=(5, 4))
for model in metrics["test"]:
    c = curves["pr"][f"{model}/{ref_budget}"]
    line, = ax.plot(c["recall"], c["precision"], label=model)
    r = metrics["test"][model][ref_budget]
    ax.plot(r["recall"], r["precision"], "o", color=line.get_color())
    t = r.get("at_precision_target") or {}
    if t.get("precision") is not None:
        ax.plot(t["recall"], t["precision"], "x", color=line.get_color())
ax.set_xlabel("recall")
ax.set_ylabel("precision")
ax.set_xlim(0, 1)
ax.set_ylim(0, 1.02)
ax.legend(fontsize=7)
ax.set_title(f"burned class, budget {ref_budget}; thresholds chosen on val: dots best F1, crosses precision "
             f"{cfg['wildfire']['precision_target']}",
             fontsize=9)
fig.tight_layout()
fig.savefig(fig_dir / "pr_curves.png", dpi=110)

# %% [markdown]
# ## Predictions against labels on test tiles
#
# Red contour: labelled burned area; orange fill: the best model's prediction at its operating
# threshold; grey: ignored (clouds, smoke, shadow).

# %%
preds = load_test_predictions(profile)
labels, images = preds.pop("labels"), preds.pop("images")
best_key = f"{metrics['best']['model']}/{metrics['best']['budget']}"
thr = metrics["best"]["threshold"]
wl = np.array([665.0, 560.0, 492.0])
n = min(4, len(labels))
fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.4), squeeze=False)
for j in range(n):
    y, p = labels[j], preds[best_key][j]
    for row, what in enumerate(("label", "prediction")):
        ax = axes[row, j]
        ax.imshow(true_colour(images[j], wl))
        ax.imshow(np.ma.masked_where(y != 255, y), cmap="Greys", alpha=0.5, vmin=0, vmax=255)
        if what == "label" and (y == 1).any():
            ax.contour(y == 1, levels=[0.5], colors="red", linewidths=0.8)
        if what == "prediction":
            ax.imshow(np.ma.masked_where((p < thr) | (y == 255), p), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"test tile {j}: {what}", fontsize=8)
        ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "test_predictions.png", dpi=110)

# %% [markdown]
# ## Failure cases
#
# The test tiles where the best model's F1 is lowest.

# %%
from vhrfm.apps.segmentation import confusion, scores_from_confusion

c = confusion(preds[best_key], labels, thr)
per_tile = pd.DataFrame([scores_from_confusion(ci) for ci in c]).assign(burned_px=(labels == 1).sum((1, 2)))
display(per_tile.sort_values("f1").head(5).round(3))

# %% [markdown]
# ## Timing
#
# Training and test inference wall time per model and budget on this machine (the throughput of
# whole-scene prediction is measured by `make bench`).

# %%
display(pd.DataFrame(metrics["throughput"]).T)

# %% [markdown]
# ## Whole-scene prediction: what `vhrfm predict --task wildfire SCENE.tif -o OUT` gives
#
# The deployed model, what `vhrfm predict` uses by default (the student variant and budget with the best
# validation F1, named `default` in `models/wildfire/index.json`; `--model teacher` picks the best teacher
# variant instead) maps each whole scene with the command line's code path: overlapping
# windows, stitched, a probability and a mask GeoTIFF (COG), GeoJSON polygons with area, a folium map
# and a summary. The scene outputs are then scored on the **test split's** labelled pixels. These
# numbers should agree with the tile-based test metrics of the same model above up to tiling (there,
# tiles overlap and tiles with < 20 % labelled pixels are dropped).

# %%
from vhrfm.apps.wildfire import run_scene_check

scene_check = run_scene_check(profile)
display(pd.DataFrame(scene_check["scenes"]).set_index("scene"))
dep = metrics["deployed"]
tile_based = metrics["test"][dep["model"]][dep["budget"]]
display(pd.DataFrame({"whole scene (CLI), test pixels": scene_check["test_pixels"],
                      "whole scene (CLI), every labelled pixel (training included)": scene_check["all_labelled_pixels"],
                      f"tiles, test ({dep['model']} {dep['budget']})": {k: tile_based[k] for k in scene_check["test_pixels"]}}).T.round(3))

# %% [markdown]
# What an analyst would read off the summary: the burned area. Bright clouds are flagged by the cloud
# rule in the model's card (fitted on the training tiles' cloud masks: a pixel bright in every visible
# band, with at most a set share of labelled pixels flagged) and written as unknown; `cloud_km2` is their
# area. `area_km2` counts every other pixel called burned, including shadows, thin smoke and sea, which
# the labels leave out; the columns below compare the predicted and labelled burned area on labelled
# pixels only, and give the share of the ignored (cloud / smoke / shadow) pixels still called burned.

# %%
print("cloud rule:", json.dumps(metrics.get("cloud_rule"), indent=1))
display(pd.DataFrame(scene_check["scenes"]).set_index("scene")[["area_km2", "cloud_km2", "predicted_burned_km2_on_labelled",
                                                                "labelled_burned_km2", "positive_fraction_in_ignored"]])

# %% [markdown]
# Maps of the whole scenes: labels (burned red, ignored grey), the prediction, and the test blocks (outlined).

# %%
import rasterio

from vhrfm.apps.wildfire import scene_labels, split_pixels
from vhrfm.config import data_dir
from vhrfm.data.datasets import load_splits
from vhrfm.data.sources import SOURCES

splits = load_splits(results_dir(profile) / "data" / "splits.csv")
items = [it for src in cfg["wildfire"]["sources"] for it in SOURCES[src].items()]
fig, axes = plt.subplots(len(items), 3, figsize=(13, 4.4 * len(items)), squeeze=False)
for row, it in zip(axes, items):
    with rasterio.open(data_dir() / it.path) as src:
        img = src.read().astype(np.float32)
    folder = results_dir(profile) / scene_check["scenes"][items.index(it)]["folder"]
    with rasterio.open(next(folder.glob("*_mask.tif"))) as src:
        pred = src.read(1)
    y = scene_labels(it)
    test = split_pixels(splits, it.path, y.shape, "test")
    rgb = true_colour(img, wl)
    row[0].imshow(rgb)
    row[0].set_title(f"{it.group}: post-fire true colour", fontsize=8)
    row[1].imshow(rgb)
    row[1].imshow(np.ma.masked_where(y != 1, y), cmap="autumn", alpha=0.5)
    row[1].imshow(np.ma.masked_where(y != 255, y), cmap="Greys", alpha=0.5, vmin=0, vmax=255)
    row[1].set_title("label: burned (red), ignored (grey)", fontsize=8)
    row[2].imshow(rgb)
    row[2].imshow(np.ma.masked_where(pred != 1, pred), cmap="autumn", alpha=0.5)
    row[2].set_title(f"prediction ({scene_check['model']})", fontsize=8)
    for ax in row:
        ax.contour(test, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "scene_maps.png", dpi=100)

# %% [markdown]
# ## A VHR post-fire scene, qualitatively
#
# The only VHR post-fire image in the store is a GeoEye-1 RGB chip of Coffey Park (Santa Rosa, Tubbs
# fire 2017, xBD), **without labels and without georeference**. `vhrfm predict` refuses it (it writes
# georeferenced outputs, so it needs a CRS); the same windows and stitching run in memory here. The
# model was trained at 10 m on Sentinel-2: at 0.42 m this is far out of its training distribution, and
# the map below is a qualitative look, not a result.

# %%
from vhrfm.apps.scene import predict_array, predict_scene
from vhrfm.apps.taskmodel import load_task_model
from vhrfm.config import models_dir
from vhrfm.errors import VHRFMInputError

deployed = load_task_model(models_dir(profile) / "wildfire" / f"{scene_check['model']}.json")
vhr = SOURCES["xbd_santa_rosa_demo"].items()[0]
try:
    predict_scene(data_dir() / vhr.path, deployed, out / "scenes" / "xbd_refused", progress=False)
except VHRFMInputError as exc:
    print("vhrfm predict:", exc)
with rasterio.open(data_dir() / vhr.path) as src:
    vimg = src.read().astype(np.float32)
vprob = predict_array(deployed, vimg, gsd=vhr.gsd)
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
axes[0].imshow(true_colour(vimg, wl))
axes[0].set_title(f"GeoEye-1 RGB, {vhr.gsd} m (xBD, Santa Rosa 2017)", fontsize=8)
im = axes[1].imshow(vprob, cmap="inferno", vmin=0, vmax=1)
axes[1].contour(vprob >= deployed.threshold, levels=[0.5], colors="cyan", linewidths=0.6)
axes[1].set_title(f"probability; cyan: >= threshold {deployed.threshold:.2f} (qualitative only)", fontsize=8)
fig.colorbar(im, ax=axes[1], shrink=0.8)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "vhr_qualitative.png", dpi=100)
print(f"fraction above threshold: {(vprob >= deployed.threshold).mean():.3f}")

# %% [markdown]
# ## Limits
#
# * 10 m Sentinel-2 render, not VHR, and a single fire event: spatially disjoint blocks of two adjacent
#   tiles are not an independent region; the confidence intervals are wide.
# * The 1 % budget is a few 1.28 km tiles (`budgets` above). Fine-tuning runs are short on the `cpu` profile.
# * Validation and test are six blocks each, drawn across the blocks' burned share, from the same two
#   adjacent scenes as training. The whole-scene check above scores the test pixels and every labelled
#   pixel; the maps show what tile metrics hide (sea, shadows, thin smoke), so the burned area of a
#   summary is an upper bound. Only bright clouds are masked at prediction time (the card's cloud rule);
#   there is no water mask yet.
# * No pre-fire image of the same ground is in the store: the classical change index (post minus pre,
#   dNBR-style, `vhrfm.apps.wildfire.change_indices`) is implemented and unit-tested on synthetic
#   rasters but not evaluated here; the learned models take post-fire input only.
