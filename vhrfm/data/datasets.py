"""Datasets over the real sources: dict samples read window by window from the stored split table.

A sample (as in TorchGeo) is a dict:

* ``image``: float32 C x H x W (normalised when statistics are given), padded to the tile size;
* ``valid``: bool H x W (False on padding and nodata);
* ``wavelengths`` / ``widths``: float32 (C,), centre and width in nm of each band, from the sensor registry;
* ``gsd`` (m), ``sensor``, ``source``, ``path``, ``window`` (row, col, height, width), ``split``;
* labels where the source has them: ``mask`` (int64 H x W, 255 = ignore: clouds, padding),
  ``boxes`` (float32 N x 4, xyxy pixels in the tile) with ``labels`` (list of str).

Arrays are numpy; :func:`collate` stacks a batch into torch tensors (boxes stay lists).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.windows import Window

from vhrfm.config import data_dir
from vhrfm.data.io import open_raster, read_window
from vhrfm.data.normalize import Normalizer, stats_key, stretch
from vhrfm.data.sources import SOURCES, Item, get_source
from vhrfm.errors import VHRFMInputError
from vhrfm.sensors import get_sensor, true_colour_indices

IGNORE = 255


def load_splits(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise VHRFMInputError("split table not found: run the `data` stage (dvc repro)", path=p)
    return pd.read_csv(p)


def _items_by_path(source_ids: Sequence[str]) -> dict[str, Item]:
    return {it.path: it for s in source_ids for it in get_source(s).items()}


def _boxes_in_window(boxes: np.ndarray, labels: Sequence[str], r0: int, c0: int, h: int, w: int, min_visible: float = 0.5):
    """Boxes shifted into the window and clipped; kept when at least ``min_visible`` of their area is inside."""
    if boxes is None or len(boxes) == 0:
        return np.zeros((0, 4), np.float32), []
    b = boxes.astype(np.float32) - np.array([c0, r0, c0, r0], np.float32)
    clipped = b.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    area = np.maximum(b[:, 2] - b[:, 0], 1e-6) * np.maximum(b[:, 3] - b[:, 1], 1e-6)
    inside = np.maximum(clipped[:, 2] - clipped[:, 0], 0) * np.maximum(clipped[:, 3] - clipped[:, 1], 0)
    keep = inside / area >= min_visible
    return clipped[keep], [lab for lab, k in zip(labels, keep) if k]


class SourceDataset:
    """Tiles of one or more sources, for one split (or all), from a split table.

    ``stats``: the normalisation statistics (``results/data/norm_stats.json`` content); when given,
    each image is normalised with its ``<source>/<product>`` entry.
    """

    def __init__(self, sources: str | Sequence[str], splits: pd.DataFrame | str | Path, split: str | None = None,
                 stats: dict | None = None, tile_size: int | None = None, products: Sequence[str] | None = None):
        self.sources = [sources] if isinstance(sources, str) else list(sources)
        for s in self.sources:
            get_source(s)
        table = splits if isinstance(splits, pd.DataFrame) else load_splits(splits)
        table = table[table.source.isin(self.sources)]
        if split is not None:
            table = table[table.split == split]
        if products is not None:
            table = table[table["product"].isin(products)]
        self.table = table.reset_index(drop=True)
        self.split = split
        self.items = _items_by_path(self.sources)
        self.stats = stats
        if tile_size is None and len(self.table):
            tile_size = int(max(self.table.height.max(), self.table.width.max()))  # the largest window of the table
        self.tile_size = tile_size

    def __len__(self) -> int:
        return len(self.table)

    def item(self, idx: int) -> Item:
        return self.items[self.table.path.iat[idx]]

    def n_boxes(self, idx: int) -> int:
        """Boxes in tile ``idx``, from the labels alone (no pixels read)."""
        row = self.table.iloc[idx]
        it = self.items[row.path]
        boxes, _ = _boxes_in_window(it.boxes, it.box_labels, int(row.row_off), int(row.col_off), int(row.height), int(row.width))
        return len(boxes)

    def __getitem__(self, idx: int) -> dict:
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        row = self.table.iloc[idx]
        it = self.items[row.path]
        sensor = get_sensor(SOURCES[it.source].sensor)
        window = Window(int(row.col_off), int(row.row_off), int(row.width), int(row.height))
        with open_raster(data_dir() / it.path, expected_bands=len(it.bands)) as src:
            data, valid = read_window(src, window, out_size=self.tile_size)
        image = data.astype(np.float32)
        if self.stats is not None:
            key = stats_key(it.source, it.product)
            if key not in self.stats:
                raise VHRFMInputError("no normalisation statistics for this source/product", expected=key,
                                      found=sorted(self.stats))
            image = Normalizer.from_stats(self.stats[key])(image)
        image[:, ~valid] = 0.0
        sample = {
            "image": image,
            "valid": valid,
            "wavelengths": np.asarray(sensor.wavelengths(it.bands), np.float32),
            "widths": np.asarray(sensor.widths(it.bands), np.float32),
            "gsd": float(it.gsd),
            "sensor": sensor.id,
            "source": it.source,
            "product": it.product,
            "path": it.path,
            "window": (int(row.row_off), int(row.col_off), int(row.height), int(row.width)),
            "split": row.split,
        }
        if it.mask is not None:
            with open_raster(data_dir() / it.mask, expected_bands=1) as src:
                mask, _ = read_window(src, window, out_size=self.tile_size, fill=IGNORE)
            mask = mask[0].astype(np.int64)
            if it.ignore is not None:
                with open_raster(data_dir() / it.ignore, expected_bands=1) as src:
                    ign, _ = read_window(src, window, out_size=self.tile_size, fill=1)
                mask[ign[0] != 0] = IGNORE
            mask[~valid] = IGNORE
            sample["mask"] = mask
        if it.boxes is not None:
            boxes, labels = _boxes_in_window(it.boxes, it.box_labels, int(row.row_off), int(row.col_off),
                                             int(row.height), int(row.width))
            sample["boxes"], sample["labels"] = boxes, labels
        return sample

    def plot(self, sample: dict, ax=None, title: str | None = None):
        return plot_sample(sample, ax=ax, title=title)


def true_colour(image: np.ndarray, wavelengths: Sequence[float], valid: np.ndarray | None = None) -> np.ndarray:
    """H x W x 3 in [0, 1]: the bands nearest red, green and blue, stretched at the 2-98th percentiles."""
    idx = true_colour_indices(list(wavelengths))
    rgb = image[idx].astype(np.float32)
    if valid is not None and valid.any() and not valid.all():
        rgb = np.where(valid[None], rgb, np.nan)
    out = stretch(rgb)
    return np.nan_to_num(np.moveaxis(out, 0, -1), nan=0.0)


def plot_sample(sample: dict, ax=None, title: str | None = None):
    """Draw a sample in true colour (chosen from its wavelengths) with its mask and boxes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(true_colour(sample["image"], sample["wavelengths"], sample.get("valid")))
    if "mask" in sample:
        m = np.ma.masked_where(sample["mask"] != 1, sample["mask"])
        ax.imshow(m, cmap="autumn", alpha=0.35, vmin=0, vmax=1, interpolation="nearest")
        if (sample["mask"] == 1).any() and (sample["mask"] == 0).any():
            ax.contour(sample["mask"] == 1, levels=[0.5], colors="red", linewidths=0.8)
    for (x0, y0, x1, y1) in sample.get("boxes", []):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.0, ec="cyan"))
    ax.set_title(title or f"{sample['sensor']} · {sample['gsd']:g} m · {len(sample['wavelengths'])} band(s)", fontsize=8)
    ax.set_axis_off()
    return ax


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples: arrays of equal shape become torch tensors, the rest lists."""
    import torch

    out = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if isinstance(vals[0], np.ndarray) and k not in ("boxes",) and all(v.shape == vals[0].shape for v in vals):
            out[k] = torch.from_numpy(np.stack(vals))
        elif isinstance(vals[0], float):
            out[k] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[k] = vals
    return out
