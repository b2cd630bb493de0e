"""Shared fixtures: small synthetic rasters made with a fixed seed in a temp dir, and the real data check."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from vhrfm.config import data_dir

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def make_raster(tmp_path):
    """Factory: write a seeded random raster and return its path (and the array)."""

    def _make(name="scene.tif", count=4, height=300, width=257, dtype="uint16", crs="EPSG:32631", nodata=None,
              seed=0, driver="GTiff", res=0.5, fill=None):
        rng = np.random.default_rng(seed)
        if fill is not None:
            arr = np.full((count, height, width), fill, dtype=dtype)
        elif np.dtype(dtype).kind == "f":
            arr = rng.normal(500, 100, (count, height, width)).astype(dtype)
        else:
            hi = min(np.iinfo(dtype).max, 2047)
            arr = rng.integers(1, hi, (count, height, width)).astype(dtype)
        path = tmp_path / name
        kw = dict(driver=driver, width=width, height=height, count=count, dtype=dtype)
        if crs is not None:
            kw.update(crs=crs, transform=from_origin(600000, 5700000, res, res))
        if nodata is not None:
            kw["nodata"] = nodata
        with rasterio.open(path, "w", **kw) as dst:
            dst.write(arr)
        return path, arr

    return _make


@pytest.fixture(scope="session")
def real_data():
    """The real corpus must be pulled (make data); integration tests fail loudly, never skip, without it."""
    d = data_dir()
    if not (d / "pretrain").is_dir():
        pytest.fail(f"real data missing under {d}: run `make data` (dvc pull from ../shared/dvc-store)")
    return d


@pytest.fixture(scope="session")
def smoke_splits(real_data):
    """The smoke profile's split table and statistics, computed from the real data (not read from results/)."""
    from vhrfm.data.prepare import build_splits, compute_stats

    df = build_splits("smoke")
    return df, compute_stats(df, "smoke", progress=False)


@pytest.fixture
def load_script():
    """``load_script("name")``: the module ``scripts/name.py``, loaded from its file as ``python scripts/name.py`` would."""
    import importlib.util

    from vhrfm.config import project_root

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(name, project_root() / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return _load


@pytest.fixture
def d4_reference():
    """``d4_reference(predict, *arrays)``: the mean over the 8 rotations and flips of ``predict(*views)`` (one view
    of each array, on its last two axes), each result turned back. Written with numpy's rot90 and flips,
    independently of the package's D4 helpers, to check their test-time augmentation against."""

    def _mean(predict, *arrays):
        acc = 0.0
        for flip in (False, True):
            for k in range(4):
                def view(a):
                    a = np.rot90(a, k, axes=(-2, -1))
                    return np.ascontiguousarray(a[..., ::-1] if flip else a)
                p = np.asarray(predict(*(view(a) for a in arrays)))
                acc = acc + np.rot90(p[..., ::-1] if flip else p, -k, axes=(-2, -1))
        return acc / 8

    return _mean
