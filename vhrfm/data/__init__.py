"""Data: raster I/O, the real sources of ``data/``, splits, normalisation and datasets."""

from vhrfm.data.datasets import SourceDataset, collate, load_splits, plot_sample, true_colour
from vhrfm.data.io import (
    RasterInfo,
    RasterWriter,
    Stitcher,
    Tile,
    iter_tiles,
    open_raster,
    raster_info,
    read_window,
    tile_grid,
    write_geojson,
    write_geotiff,
)
from vhrfm.data.normalize import Normalizer, band_statistics, load_stats, save_stats
from vhrfm.data.sources import SOURCES, Item, Source, get_source
from vhrfm.data.splits import check_disjoint, make_splits

__all__ = [
    "SOURCES", "Item", "Source", "get_source", "SourceDataset", "collate", "load_splits", "plot_sample",
    "true_colour", "RasterInfo", "RasterWriter", "Stitcher", "Tile", "iter_tiles", "open_raster", "raster_info",
    "read_window", "tile_grid", "write_geojson", "write_geotiff", "Normalizer", "band_statistics", "load_stats",
    "save_stats", "check_disjoint", "make_splits",
]
