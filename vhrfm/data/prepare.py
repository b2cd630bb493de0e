"""The ``prepare`` stage: split table and normalisation statistics for one profile."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.windows import Window
from tqdm.auto import tqdm

from vhrfm.config import data_dir, load_profile, results_dir
from vhrfm.data.io import open_raster, read_window
from vhrfm.data.normalize import band_statistics, save_stats, stats_key
from vhrfm.data.sources import SOURCES
from vhrfm.data.splits import check_disjoint, make_splits, select_items
from vhrfm.errors import VHRFMInputError
from vhrfm.provenance import write_fingerprint
from vhrfm.sensors import get_sensor


def profile_items(profile: str):
    cfg = load_profile(profile)["data"]
    return [it for s in SOURCES.values() for it in select_items(s.items(), cfg["max_items_per_source"])]


def build_splits(profile: str) -> pd.DataFrame:
    p = load_profile(profile)
    cfg = p["data"]
    df = make_splits(profile_items(profile), tile_size=cfg["tile_size"], overlap=cfg["overlap"],
                     block_size=cfg["block_size"], fractions=cfg["split_fractions"], seed=p["seed"],
                     per_source=cfg.get("per_source"))
    problems = check_disjoint(df)
    if problems:
        raise RuntimeError("splits are not spatially disjoint: " + "; ".join(problems[:5]))
    return df


def compute_stats(splits: pd.DataFrame, profile: str, progress: bool = True) -> dict:
    """Statistics per <source>/<product> over its training tiles (validation tiles if it has no training tile)."""
    p = load_profile(profile)
    max_tiles = p["data"]["stats_max_tiles"]
    items = {it.path: it for it in profile_items(profile)}
    out = {}
    groups = list(splits.groupby(["source", "product"]))
    for (source, product), g in tqdm(groups, desc="normalisation statistics", disable=not progress):
        use = g[g.split == "train"]
        if use.empty:
            use = g[g.split == "val"]
        if use.empty:
            raise VHRFMInputError("no train or val tiles for statistics", found=f"{source}/{product}")
        if max_tiles is not None:
            # evenly spaced tiles of each image
            pos = use.groupby("path").cumcount().to_numpy()
            size = use.groupby("path").path.transform("size").to_numpy()
            keep = np.zeros(len(use), dtype=bool)
            for n in np.unique(size):
                picks = set(np.linspace(0, n - 1, min(n, max_tiles)).astype(int))
                keep |= (size == n) & np.isin(pos, list(picks))
            use = use[keep]

        def tiles():
            for path, rows in use.groupby("path"):
                with open_raster(data_dir() / path) as src:
                    for r in rows.itertuples():
                        yield read_window(src, Window(r.col_off, r.row_off, r.width, r.height))

        first = items[use.path.iat[0]]
        sensor = get_sensor(SOURCES[source].sensor)
        st = band_statistics(tiles(), seed=p["seed"])
        with open_raster(data_dir() / first.path) as src:
            dtype = src.dtypes[0]
        out[stats_key(source, product)] = {
            "source": source, "product": product, "sensor": sensor.id, "bands": list(first.bands),
            "wavelengths": sensor.wavelengths(first.bands), "widths": sensor.widths(first.bands),
            "gsd": first.gsd, "dtype": dtype, "computed_on": sorted(use.split.unique()), **st,
        }
    return out


def prepare(profile: str, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Write ``splits.csv``, ``norm_stats.json`` and ``environment.json`` (the machine: :mod:`vhrfm.provenance`)
    under ``results[/<profile>]/data``; return a summary."""
    out = Path(out_dir) if out_dir else results_dir(profile) / "data"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    splits = build_splits(profile)
    tmp = out / ".splits.csv.part"
    splits.to_csv(tmp, index=False)
    tmp.replace(out / "splits.csv")
    stats = compute_stats(splits, profile, progress=progress)
    save_stats(stats, out / "norm_stats.json")
    write_fingerprint(out / "environment.json")
    return {"tiles": len(splits), "products": len(stats), "seconds": round(time.perf_counter() - t0, 2)}
