"""The pretraining corpus: normalised crops of every source's non-test tiles, held in memory per product.

Crops are cut from the split table's tiles (the foundation's tiler), normalised with the stored
per-product statistics and kept as float16, one array per ``<source>/<product>`` so that every batch
shares one band set. No test-split tile of any source is used. A batch for a step is drawn from a
generator seeded with (seed, step, rank): a run is reproducible and resumes exactly after a kill.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from rasterio.windows import Window
from tqdm.auto import tqdm

from vhrfm.config import data_dir
from vhrfm.data.io import open_raster, read_window
from vhrfm.data.normalize import Normalizer, stats_key
from vhrfm.data.sources import SOURCES
from vhrfm.sensors import get_sensor


@dataclass
class ProductCrops:
    key: str
    sensor: str
    source: str
    crops: np.ndarray          # (N, C, S, S) float16, normalised
    wavelengths: np.ndarray    # (C,)
    widths: np.ndarray         # (C,)
    gsd: float


@dataclass
class Corpus:
    products: list[ProductCrops]
    weights: np.ndarray = field(default=None)  # sampling probability per product

    def __post_init__(self):
        if self.weights is None:
            n = np.array([len(p.crops) for p in self.products], float)
            w = np.sqrt(n)  # square-root balancing: big sources count, small ones are not drowned
            self.weights = w / w.sum()

    @property
    def n_crops(self) -> int:
        return int(sum(len(p.crops) for p in self.products))

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([{"product": p.key, "sensor": p.sensor, "crops": len(p.crops), "bands": len(p.wavelengths),
                              "gsd_m": p.gsd, "weight": round(float(w), 3)} for p, w in zip(self.products, self.weights)])

    def batch(self, step: int, batch_size: int, seed: int, rank: int = 0):
        """(images (B,C,S,S) as stored, float16, wavelengths (C,), widths (C,), gsd (B,), product key) for this step and
        rank. The images are cast to float32 where they are trained on (:func:`vhrfm.ssl.train.step_loss`): the cast
        of a 256-crop batch took 14 ms of a GPU step's CPU time, the gather alone 1 ms."""
        rng = np.random.default_rng([seed, step, rank])
        p = self.products[rng.choice(len(self.products), p=self.weights)]
        idx = rng.integers(0, len(p.crops), batch_size)
        x = torch.from_numpy(p.crops[idx])
        return x, torch.from_numpy(p.wavelengths), torch.from_numpy(p.widths), torch.full((batch_size,), p.gsd), p.key

    @classmethod
    def from_arrays(cls, arrays: dict[str, tuple[np.ndarray, list[float], list[float], float]]) -> Corpus:
        """Build from in-memory arrays (tests, benchmarks): key -> (crops, wavelengths, widths, gsd)."""
        prods = [ProductCrops(k, "synthetic", k, a.astype(np.float16), np.asarray(wl, np.float32), np.asarray(wd, np.float32), g)
                 for k, (a, wl, wd, g) in arrays.items()]
        return cls(prods)


def build_corpus(splits: pd.DataFrame, stats: dict, *, crop: int, crops_per_tile: int, max_tiles_per_product: int | None,
                 seed: int, exclude_sources: tuple[str, ...] = (), progress: bool = True) -> Corpus:
    """Read non-test tiles, normalise, and cut ``crops_per_tile`` random ``crop`` x ``crop`` windows from each."""
    rng = np.random.default_rng(seed)
    usable = splits[(splits.split != "test") & ~splits.source.isin(exclude_sources)]
    items = {it.path: it for s in SOURCES.values() for it in s.items()}
    products = []
    groups = list(usable.groupby(["source", "product"]))
    for (source, product), g in tqdm(groups, desc="pretraining corpus", disable=not progress):
        if max_tiles_per_product is not None and len(g) > max_tiles_per_product:
            g = g.iloc[np.sort(rng.choice(len(g), max_tiles_per_product, replace=False))]
        key = stats_key(source, product)
        norm = Normalizer.from_stats(stats[key])
        out = []
        for path, rows in g.groupby("path", sort=True):
            with open_raster(data_dir() / path) as src:
                for r in rows.itertuples():
                    data, valid = read_window(src, Window(r.col_off, r.row_off, r.width, r.height))
                    h, w = valid.shape
                    if h < crop or w < crop:
                        continue
                    x = norm(data)
                    for _ in range(crops_per_tile):
                        i, j = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
                        if valid[i:i + crop, j:j + crop].mean() < 0.95:
                            continue
                        out.append(x[:, i:i + crop, j:j + crop].astype(np.float16))
        if not out:
            continue
        it = items[g.path.iat[0]]
        sensor = get_sensor(SOURCES[source].sensor)
        products.append(ProductCrops(key, sensor.id, source, np.stack(out),
                                     np.asarray(sensor.wavelengths(it.bands), np.float32),
                                     np.asarray(sensor.widths(it.bands), np.float32), float(it.gsd)))
    return Corpus(products)
