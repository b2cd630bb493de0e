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
# # Chapter 0 — The corpus: real very-high-resolution imagery from many sensors
#
# What do we have to learn from? This chapter tours every source in `data/` (tracked by `data.dvc`,
# pulled from the project's DVC store): the sensor, its ground sampling distance (GSD) and bands, the
# pixel volume, the labels and the licence. It shows a true-colour thumbnail per source, the per-band
# distributions per sensor, and where the georeferenced images lie on Earth.
#
# All numbers below are computed from the files by the `prepare` stage (split table and normalisation
# statistics) and by this notebook, which writes them to `results/data/metrics.json`.

# %% tags=["parameters"]
profile = "cpu"

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from vhrfm.config import load_profile, results_dir
from vhrfm.data import SOURCES, load_splits, load_stats
from vhrfm.data.catalog import footprints, mask_pixel_counts, pixel_sample, source_table, thumbnail
from vhrfm.data.datasets import true_colour
from vhrfm.sensors import get_sensor
from vhrfm.viz import band_histograms, footprint_map, spectral_bands

cfg = load_profile(profile)
out = results_dir(profile) / "data"
fig_dir = out / "figures"
fig_dir.mkdir(parents=True, exist_ok=True)
splits = load_splits(out / "splits.csv")
stats = load_stats(out / "norm_stats.json")
used_items = [it for s in SOURCES.values() for it in s.items() if it.path in set(splits.path)]
print(f"profile={profile}: {splits.path.nunique()} images, {len(splits)} tiles of {cfg['data']['tile_size']} px")

# %% [markdown]
# ## The sources
#
# One row per source. `gsd_m` is the pixel size of the files (products may be resampled: the
# SpaceNet MS crops are at 1 m, the Pleiades JPEGs at 0.5 m). Tiles are the windows of the split table
# (tile size and overlap from `params.yaml`), cut inside spatial blocks so that no tile of one split
# overlaps a tile of another. `non_commercial` marks sources whose licence forbids commercial use.

# %%
table = source_table(splits)
with pd.option_context("display.max_colwidth", 60, "display.width", 250):
    display(table.drop(columns=["labels"]))

# %% [markdown]
# ## The sensors' bands
#
# The sensor registry (`vhrfm.sensors`) holds every band's centre wavelength and width, from the
# vendors' documentation. A model reads wavelengths, not band indices, so a new sensor is a registry
# entry. Grey bars are panchromatic bands.

# %%
used_sensors = sorted({SOURCES[s].sensor for s in table.source})
fig, ax = plt.subplots(figsize=(9, 4))
spectral_bands(ax)
ax.set_title("Spectral bands in the registry (bold: sensors present in data/)")
for lab in ax.get_yticklabels():
    if any(get_sensor(s).name == lab.get_text() for s in used_sensors):
        lab.set_fontweight("bold")
fig.tight_layout()
fig.savefig(fig_dir / "spectral_bands.png", dpi=120)

# %% [markdown]
# ## What the images look like
#
# True colour is chosen from the wavelengths (bands nearest 650 / 560 / 480 nm; single-band
# PAN images show in grey), stretched at the 2nd–98th percentiles. Thumbnails are decimated reads.

# %%
n_per = cfg["data"]["thumbnails_per_source"]
picks = []
for sid in table.source:
    its = [it for it in used_items if it.source == sid]
    picks += its[:: max(1, len(its) // n_per)][:n_per]
cols = 6
rows = int(np.ceil(len(picks) / cols))
fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.9 * rows), squeeze=False)
for ax, it in zip(axes.flat, picks):
    data, valid = thumbnail(it)
    sensor = get_sensor(SOURCES[it.source].sensor)
    ax.imshow(true_colour(data, sensor.wavelengths(it.bands), valid))
    ax.set_title(f"{sensor.name}\n{it.source[:26]} · {it.gsd:g} m · {it.product}", fontsize=6)
for ax in axes.flat:
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "thumbnails.png", dpi=110)

# %% [markdown]
# ## Per-band distributions per sensor and product
#
# Raw values of a few training tiles per product. The same sensor comes in very different units:
# 11/12-bit counts, reflectance-like floats, 8-bit renders. This is why normalisation statistics are
# kept per source product (`results/data/norm_stats.json`), each tagged with its sensor.

# %%
keys = sorted(stats)
cols = 4
rows = int(np.ceil(len(keys) / cols))
fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.4 * rows), squeeze=False)
for ax, key in zip(axes.flat, keys):
    st = stats[key]
    values = pixel_sample(splits, st["source"], st["product"], n_tiles=4, seed=cfg["seed"])
    band_histograms(ax, values, st["wavelengths"], st["bands"])
    ax.set_title(f"{get_sensor(st['sensor']).name} — {key}\n{st['dtype']}", fontsize=7)
    ax.tick_params(labelsize=6)
for ax in axes.flat[len(keys):]:
    ax.set_axis_off()
fig.tight_layout()
fig.savefig(fig_dir / "band_histograms.png", dpi=110)

# %%
stats_table = pd.DataFrame([
    {"product": k, "sensor": v["sensor"], "dtype": v["dtype"], "bands": ",".join(v["bands"]),
     "mean": np.round(v["mean"], 1).tolist(), "std": np.round(v["std"], 1).tolist(), "p99": np.round(v["p99"], 1).tolist(),
     "tiles": v["n_tiles"], "computed_on": ",".join(v["computed_on"])}
    for k, v in stats.items()
])
display(stats_table)

# %% [markdown]
# ## Labels
#
# Boxes (aircraft on the Pleiades airports, whales on the WorldView-3 chips, seals on the drone
# tiles) and masks (burned area on the Sentinel-2 fire tiles, clouds and smoke ignored). Below: one
# labelled training tile per labelled source, with its labels.

# %%
from vhrfm.data import SourceDataset

labelled = [s for s in table.source if table.set_index("source").at[s, "boxes"] > 0 or table.set_index("source").at[s, "mask"]]
fig, axes = plt.subplots(1, len(labelled), figsize=(3.2 * len(labelled), 3.4), squeeze=False)
for ax, sid in zip(axes.flat, labelled):
    ds = SourceDataset(sid, splits, split="train")
    candidates = np.linspace(0, len(ds) - 1, min(len(ds), 40)).astype(int)
    if ds.item(0).boxes is not None:  # the tile with the most boxes
        best = max(range(len(ds)), key=ds.n_boxes)
    else:  # the tile whose burned fraction is closest to one half
        best = min(candidates, key=lambda i: abs(float((ds[i]["mask"] == 1).mean()) - 0.5))
    sample = ds[best]
    ds.plot(sample, ax=ax, title=f"{sid}\n{len(sample.get('boxes', []))} boxes" if "boxes" in sample else f"{sid}\nburned (orange)")
fig.tight_layout()
fig.savefig(fig_dir / "labels.png", dpi=110)

mask_counts = mask_pixel_counts([it for it in used_items if it.mask is not None])
print("burned-area mask pixels (clear sky):", mask_counts)

# %% [markdown]
# ## Where the georeferenced images are
#
# Only some sources carry a CRS (the Pleiades JPEGs, the pansharpening pair and the stereo images are
# in sensor or pixel geometry). The map is saved as `footprints.html`; the background tiles need an
# internet connection, the footprints do not.

# %%
fp = footprints(used_items)
fmap = footprint_map(fp)
fmap.save(str(out / "footprints.html"))
display(fp.drop(columns="geometry").groupby(["source", "sensor"]).size().rename("georeferenced images"))

# %% [markdown]
# ## Metrics
#
# Per-source counts for the paper.

# %%
metrics = {
    "profile": profile,
    "tile_size": cfg["data"]["tile_size"],
    "overlap": cfg["data"]["overlap"],
    "sources": {
        r.source: {
            "area": r.area, "sensor": r.sensor, "gsd_m": r.gsd_m, "images": int(r.images), "megapixels": float(r.megapixels),
            "georeferenced_images": int(r.georeferenced), "tiles": {"train": int(r.tiles_train), "val": int(r.tiles_val), "test": int(r.tiles_test)},
            "boxes": int(r.boxes), "non_commercial": bool(r.non_commercial), "licence": r.licence,
        }
        for r in table.itertuples()
    },
    "totals": {
        "sources": int(len(table)),
        "sensors": len(used_sensors),
        "images": int(table.images.sum()),
        "megapixels": round(float(table.megapixels.sum()), 2),
        "tiles": int(len(splits)),
        "boxes": int(table.boxes.sum()),
        "burned_pixels": mask_counts["positive"],
        "unburned_pixels": mask_counts["negative"],
        "ignored_pixels": mask_counts["ignored"],
    },
}
(out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
print(json.dumps(metrics["totals"], indent=1))

# %% [markdown]
# ## Limits
#
# * Wildfire labels exist only at 10 m (Sentinel-2, EMSR382); the one VHR fire scene (GeoEye-1,
#   Santa Rosa) has no labels. Satellite megafauna labels are 14 whale boxes on five WorldView-3 chips.
# * Several sources are renders (8-bit JPEG/PNG) rather than radiometric products, and three have no CRS.
# * Four sources are non-commercial (CC BY-NC-SA, or imagery shared for research): see the licence column.
