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
# # Chapter 3 — multi-sensor domain shift (simulated sensors, and one real pair)
#
# **Question.** How much accuracy does a frozen encoder + linear probe lose when the sensor changes,
# and which cheap adaptation closes the gap?
#
# **Data, plainly.** One labelled task in the store is observed by two real sensors, and only loosely:
# megafauna points in degraded drone photographs and in WorldView-3 chips (other species, other scenes).
# Its 2 x 2 real-pair matrix closes the chapter. Every other cross-sensor number is on **simulated**
# sensors: the real
# Pleiades aircraft patches of chapter 1 (RGB render, 1 m) re-rendered as other VHR sensors would see
# them, from the sensor registry: spectral responses (Gaussian, registry centre and width), GSD with an
# MTF blur before resampling, noise, and digital-number scale. Two radiometric settings: products in
# counts (DN scaled to each sensor's bit depth, as raw products are) and calibrated products (one
# scale for all).
#
# **Protocol.** For every pair (train domain A, test domain B): the probe is fitted on A's training
# patches (C chosen on A's val), the encoder is the frozen teacher; B's test patches are fed by each
# method: `naive` (A's normalisation statistics), `hist_match` (B matched to A's histograms),
# `own_norm` (B's own statistics from its unlabeled training patches), `own_norm_adabn` (plus AdaBN:
# batch-norm statistics re-estimated on B's unlabeled patches), `own_norm_adabn_tent` (then TENT: the
# batch-norm scales and shifts tuned to minimise the entropy of A's probe on B's unlabeled training
# patches, 10 Adam steps; the probe is never retrained). The adapted method is named in
# `params.yaml` beforehand. Drop = in-domain F1 of B minus the A→B F1; `gap_reduction` =
# 1 − mean drop (adapted) / mean drop (naive).

# %% tags=["parameters"]
profile = "cpu"

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from vhrfm.adapt.run import run_multisensor
from vhrfm.config import load_profile, results_dir
from vhrfm.data.datasets import true_colour
from vhrfm.viz import spectral_bands

cfg = load_profile(profile)["multisensor"]
out = results_dir(profile) / "multisensor"
fig_dir = out / "figures"
fig_dir.mkdir(parents=True, exist_ok=True)
metrics = run_multisensor(profile)
display(pd.DataFrame(metrics["domains"]).set_index("name"))

# %% [markdown]
# ## The sensors' bands (registry) and one patch as each simulated sensor sees it

# %%
fig, ax = plt.subplots(figsize=(9, 3.6))
spectral_bands(ax, sorted({t["sensor"] for t in cfg["targets"]} | {"pleiades"}))
fig.tight_layout()
fig.savefig(fig_dir / "spectral_bands.png", dpi=110)

ex = np.load(out / "examples.npz")
doms = metrics["domains"]
fig, axes = plt.subplots(1, len(doms), figsize=(2.3 * len(doms), 2.6))
for i, (ax, d) in enumerate(zip(np.atleast_1d(axes), doms)):
    x = ex[f"d{i}"][0]
    ax.imshow(true_colour(x, d["wavelengths"]) if x.shape[0] > 1 else x[0], cmap="gray", interpolation="nearest")
    ax.set_title(f"{d['name']}\n{d['gsd_m']} m, {d['patch_px']} px", fontsize=7)
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "domains.png", dpi=110)

# %% [markdown]
# ## Cross-sensor matrices: naive against adapted (F1 of the aircraft class on B's test split)

# %%
names = [d["name"] for d in doms]


def grid(m):
    return np.array([[m[f"{a}->{b}"] for b in names] for a in names])


for tag, block in (("products in counts", metrics), ("calibrated products", metrics["calibrated"])):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"wspace": 0.08})
    for ax, key in zip(axes, ("naive", "adapted")):
        im = ax.imshow(grid(block[key]), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names if key == "naive" else [], fontsize=7)
        ax.set_xlabel("test domain")
        if key == "naive":
            ax.set_ylabel("train domain")
        ax.set_title(f"{tag}: {key if key == 'naive' else metrics['adapted_method']}", fontsize=9)
        for (r, c), v in np.ndenumerate(grid(block[key])):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=axes, shrink=0.7, label="F1")
    fig.savefig(fig_dir / f"matrix_{'counts' if block is metrics else 'calibrated'}.png", dpi=110, bbox_inches="tight")

# %% [markdown]
# ## Every method, one table (mean drop off the diagonal; lower is better)

# %%
table = pd.DataFrame({"products in counts": metrics["mean_drop"], "calibrated products": metrics["calibrated"]["mean_drop"]})
display(table.round(3))
print(json.dumps({"gap_reduction (counts)": metrics["gap_reduction"],
                  "gap_reduction (calibrated)": metrics["calibrated"]["gap_reduction"],
                  "adapted method": metrics["adapted_method"]}, indent=1))

# %% [markdown]
# ## A real sensor pair: megafauna, aerial against WorldView-3
#
# The one labelled task of the store that two real sensors see: animal points in drone photographs degraded
# to 0.3 m (seals, RGB) and in WorldView-3 PAN chips (belugas). Not a clean sensor pair: species, background
# and scene differ too, and the satellite side has few animals, so this is one measured pair, not a law.
# A -> A and B -> B are in-domain (B -> B leave-one-chip-out); A -> B and B -> A are cross-sensor. Every
# image is normalised with its own source's statistics, so "naive" here is the simulated matrix's own_norm.
# The methods, each on the target's unlabeled images with settings fixed beforehand: histogram matching
# (classical), AdaBN (the detector's batch-norm statistics re-estimated on the target) and AdaBN + TENT
# (batch-norm scales and shifts tuned to minimise the heat-map's entropy). The chapter's goal
# (gap reduction >= 0.5 on real pairs) is judged on the method named in `params.yaml` beforehand, and it
# counts as met only if the reduction reaches 0.5 both as the issue defines it (signed drops) and with each
# drop floored at zero. The second reading exists because a cross-sensor F1 *above* the target's own in-domain
# F1 (the satellite in-domain detector is trained on a dozen whales) gives a negative drop. The plain mean then
# lets that offset the other direction's drop, and the reduction looks larger than any gap that was closed.
# (This rule was added after a run in which the signed reduction passed 0.5 for that reason.)

# %%
real = metrics["real_pairs"]
order = real["methods_order"]
f1 = pd.DataFrame({m: real["methods"][m]["f1"] for m in order})
f1.insert(0, "in-domain F1 of the target", [real["in_domain"][k.split("->")[1]] for k in f1.index])
display(f1.round(3))
summary = pd.DataFrame({m: {"mean drop": real["methods"][m]["mean_drop_adapted"],
                            "gap reduction": real["methods"][m]["gap_reduction"],
                            "gap reduction, drops floored at 0": real["methods"][m].get("gap_reduction_clipped"),
                            **{f"reduction {k}": v for k, v in real["methods"][m].get("gap_reduction_by_direction", {}).items()}}
                        for m in order}).T
display(summary.astype(float).round(3))
print(f"method judged for the goal (named beforehand): {real['method']}")
print(real["caveat"])

fig, ax = plt.subplots(figsize=(6, 3))
f1[order].T.plot.bar(ax=ax, rot=0)
ax.set_ylabel("cross-sensor F1")
ax.set_title("real pair: detector trained on one sensor, tested on the other", fontsize=9)
ax.legend(fontsize=7)
fig.savefig(fig_dir / "real_pair.png", dpi=110, bbox_inches="tight")
g = metrics["goal"]
print(f"Goal (gap reduction >= {g['target_gap_reduction']} on real pairs): "
      + ("MET" if g["met"] else "NOT MET") + f" (measured: {g['gap_reduction_real']} signed, "
      f"{g.get('gap_reduction_real_clipped')} with drops floored at zero)")

# %% [markdown]
# ## Band sets: unseen ones work, impossible ones fail clearly
#
# The PAN-only domain above is a band set never seen in the probe's training when A is RGB: it gives a
# measured result. A band outside the encoder's range, or a target band the source cannot simulate,
# raises a clear error:

# %%
for k, v in metrics["band_set_checks"].items():
    print(f"{k}: {v}")

# %% [markdown]
# ## Limits
#
# * The matrices above are simulation; the one real pair (megafauna) confounds the sensor with species
#   and scene and has few labelled animals on the satellite side. The simulated shift is what the simulation models (spectral
#   mixing of three broad bands, Gaussian MTF, Gaussian noise, DN scale), nothing else (no viewing
#   geometry, atmosphere, pansharpening artefacts, season or place change). The source itself is an 8-bit
#   render, not reflectance.
# * Only coarser GSDs than the source (1 m) can be simulated.
# * One task (aircraft present / absent), small test splits: see chapter 1's confidence intervals.
# * TENT is run with one setting (10 steps, Adam, learning rate 1e-3, batches of 64 unlabeled target
#   patches), set beforehand and not tuned on these matrices.
# * Not yet here: band-dropout / GSD augmentation ablations during fine-tuning; TENT on the real pair (its
#   entropy would be that of a heat-map, not of a probe).
