"""A catalogue of the real corpus: per-source table, footprints, thumbnails and pixel samples.

Used by the data chapter (``notebooks/00_data.py``) and its metrics; nothing here reads a whole
scene at full resolution (thumbnails are decimated reads, histograms come from sampled tiles).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from rasterio.windows import Window

from vhrfm.config import data_dir
from vhrfm.data.io import open_raster, raster_info, read_window
from vhrfm.data.sources import SOURCES, Item
from vhrfm.sensors import get_sensor


def source_table(splits: pd.DataFrame) -> pd.DataFrame:
    """One row per source: sensor, GSD, bands, bit depth, images, pixels, tiles per split, labels, licence."""
    rows = []
    for sid, src in SOURCES.items():
        used = set(splits.path[splits.source == sid])
        items = [it for it in src.items() if it.path in used]
        if not items:
            continue
        sensor = get_sensor(src.sensor)
        infos = [raster_info(data_dir() / it.path) for it in items]
        tiles = splits[splits.source == sid].split.value_counts()
        n_boxes = sum(len(it.boxes) for it in items if it.boxes is not None)
        products = sorted({f"{it.product}: {','.join(it.bands)}" for it in items})
        rows.append({
            "source": sid, "area": src.area, "sensor": sensor.name,
            "gsd_m": "/".join(f"{g:g}" for g in sorted({it.gsd for it in items})),
            "bands": "; ".join(products), "dtype": "/".join(sorted({i.dtype for i in infos})),
            "sensor_bits": sensor.bit_depth, "images": len(items),
            "megapixels": round(sum(i.width * i.height for i in infos) / 1e6, 2),
            "georeferenced": sum(i.crs is not None for i in infos),
            "tiles_train": int(tiles.get("train", 0)), "tiles_val": int(tiles.get("val", 0)),
            "tiles_test": int(tiles.get("test", 0)), "boxes": n_boxes,
            "mask": any(it.mask is not None for it in items),
            "labels": src.labels, "licence": src.licence, "non_commercial": src.non_commercial,
        })
    return pd.DataFrame(rows)


def mask_pixel_counts(items: list[Item]) -> dict[str, int]:
    """Burned / not burned / ignored pixel counts over the mask rasters of ``items``, read window by window."""
    counts = {"positive": 0, "negative": 0, "ignored": 0}
    for it in items:
        if it.mask is None:
            continue
        with open_raster(data_dir() / it.mask) as m, open_raster(data_dir() / it.ignore) as ig:
            for _, w in m.block_windows(1):
                mv = m.read(1, window=w)
                iv = ig.read(1, window=w)
                clear = iv == 0
                counts["positive"] += int(((mv == 1) & clear).sum())
                counts["negative"] += int(((mv == 0) & clear).sum())
                counts["ignored"] += int((~clear).sum())
    return counts


def footprints(items: list[Item]):
    """GeoDataFrame (EPSG:4326) of the georeferenced images' bounds; images without CRS are skipped."""
    import geopandas as gpd
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    rows = []
    for it in items:
        with open_raster(data_dir() / it.path) as src:
            if src.crs is None:
                continue
            b = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        rows.append({"source": it.source, "path": it.path, "sensor": SOURCES[it.source].sensor, "gsd_m": it.gsd,
                     "product": it.product, "geometry": box(*b)})
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def thumbnail(it: Item, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A decimated read of the whole image (C x h x w, longest side ``size``) and its validity mask."""
    with open_raster(data_dir() / it.path) as src:
        scale = size / max(src.width, src.height)
        shape = (src.count, max(1, round(src.height * scale)), max(1, round(src.width * scale)))
        data = src.read(out_shape=shape, resampling=Resampling.average)
        valid = np.ones(shape[1:], bool) if src.nodata is None else ~np.all(data == src.nodata, axis=0)
    return data, valid


def pixel_sample(splits: pd.DataFrame, source: str, product: str, n_tiles: int = 4, max_pixels: int = 200_000,
                 seed: int = 0) -> np.ndarray:
    """Raw pixel values (N x C) from ``n_tiles`` training tiles of one source product, for histograms."""
    g = splits[(splits.source == source) & (splits["product"] == product)]
    g = g[g.split == "train"] if (g.split == "train").any() else g
    pick = g.iloc[np.linspace(0, len(g) - 1, min(n_tiles, len(g))).astype(int)]
    values = []
    for r in pick.itertuples():
        with open_raster(data_dir() / r.path) as src:
            data, valid = read_window(src, Window(r.col_off, r.row_off, r.width, r.height))
        values.append(data[:, valid].T)
    v = np.concatenate(values).astype(np.float64)
    if len(v) > max_pixels:
        v = v[np.random.default_rng(seed).choice(len(v), max_pixels, replace=False)]
    return v
