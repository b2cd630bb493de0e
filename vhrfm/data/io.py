"""Raster I/O: checked opening, windowed tiling with overlap, exact stitching, atomic writers.

Nothing here reads a whole scene: tiles are read window by window with rasterio, and a
:class:`RasterWriter` writes window by window into a temporary tiled GeoTIFF that becomes the
final (Cloud-Optimised) GeoTIFF only when every window has been written. Errors on bad input are
:class:`~vhrfm.errors.VHRFMInputError` and leave no partial output behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.transform
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from vhrfm.errors import VHRFMInputError

__all__ = [
    "RasterInfo",
    "Tile",
    "open_raster",
    "raster_info",
    "read_window",
    "tile_grid",
    "iter_tiles",
    "Stitcher",
    "RasterWriter",
    "write_geotiff",
    "write_geojson",
    "require_crs",
    "atomic_path",
]


@dataclass(frozen=True)
class RasterInfo:
    """What a raster is, without its pixels."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None
    res: tuple[float, float]

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.count, self.height, self.width)


@contextmanager
def open_raster(path: str | os.PathLike, *, expected_bands: int | None = None, require_crs: bool = False):
    """Open a GeoTIFF / JPEG / PNG (anything GDAL reads) after checking it, as a context manager.

    Raises :class:`VHRFMInputError` when the file is missing, empty, unreadable (corrupt), has no
    pixels, has a band count other than ``expected_bands``, or has no CRS while ``require_crs``.
    """
    p = Path(path)
    if not p.exists():
        raise VHRFMInputError("raster file not found", path=p)
    if p.is_dir():
        raise VHRFMInputError("expected a raster file, got a directory", path=p)
    if p.stat().st_size == 0:
        raise VHRFMInputError("raster file is empty (0 bytes)", path=p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(p)
    except RasterioIOError as exc:
        raise VHRFMInputError(
            "raster file cannot be read (corrupt or not a raster)",
            expected="a GeoTIFF, JPEG or PNG readable by GDAL",
            found=str(exc).splitlines()[0],
            path=p,
        ) from None
    try:
        if src.count == 0 or src.width == 0 or src.height == 0:
            raise VHRFMInputError("raster has no pixels", found=f"{src.count} bands, {src.height}x{src.width}", path=p)
        if expected_bands is not None and src.count != expected_bands:
            raise VHRFMInputError("band count does not match", expected=expected_bands, found=src.count, path=p)
        if require_crs and src.crs is None:
            raise VHRFMInputError("raster has no CRS but one is needed here", expected="a georeferenced raster", found="no CRS", path=p)
        yield src
    finally:
        src.close()


def _info_from(src, path) -> RasterInfo:
    return RasterInfo(
        path=str(path),
        driver=src.driver,
        width=src.width,
        height=src.height,
        count=src.count,
        dtype=src.dtypes[0],
        crs=src.crs.to_string() if src.crs else None,
        transform=tuple(src.transform)[:6],
        nodata=src.nodata,
        res=tuple(float(r) for r in src.res),
    )


def raster_info(path: str | os.PathLike, **checks) -> RasterInfo:
    """Checked metadata of a raster (see :func:`open_raster` for the checks)."""
    with open_raster(path, **checks) as src:
        return _info_from(src, path)


def require_crs(info: RasterInfo, what: str = "this operation") -> str:
    """Return the CRS of ``info`` or raise a clear error naming ``what`` needed it."""
    if info.crs is None:
        raise VHRFMInputError(f"{what} needs a georeferenced raster", expected="a CRS", found="no CRS", path=info.path)
    return info.crs


def read_window(
    src,
    window: Window,
    *,
    bands: Sequence[int] | None = None,
    out_size: int | tuple[int, int] | None = None,
    fill: float = 0,
    allow_empty: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one window as (C, H, W) plus a boolean validity mask (H, W).

    ``bands`` are 1-based rasterio band indices. ``out_size`` pads (bottom/right) windows at the
    scene edge to a fixed tile size with ``fill``; padded and nodata pixels are invalid. With
    ``allow_empty=False`` a window in which no pixel is valid raises :class:`VHRFMInputError`.
    """
    idx = list(bands) if bands is not None else list(range(1, src.count + 1))
    try:
        data = src.read(idx, window=window)
    except RasterioIOError as exc:
        raise VHRFMInputError("raster pixels cannot be read (corrupt or truncated file)", found=str(exc).splitlines()[0],
                              path=src.name) from None
    valid = np.ones(data.shape[1:], dtype=bool)
    if src.nodata is not None:
        valid &= ~np.all(data == src.nodata, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
    if not allow_empty and not valid.any():
        raise VHRFMInputError(
            "window holds only nodata",
            expected="at least one valid pixel",
            found=f"all {valid.size} pixels nodata ({src.nodata}) in window {window}",
            path=src.name,
        )
    if out_size is not None:
        th, tw = (out_size, out_size) if isinstance(out_size, int) else out_size
        h, w = data.shape[1:]
        if h > th or w > tw:
            raise VHRFMInputError("window larger than the tile size", expected=f"<= {th}x{tw}", found=f"{h}x{w}")
        if (h, w) != (th, tw):
            padded = np.full((data.shape[0], th, tw), fill, dtype=data.dtype)
            padded[:, :h, :w] = data
            vpad = np.zeros((th, tw), dtype=bool)
            vpad[:h, :w] = valid
            data, valid = padded, vpad
    return data, valid


@dataclass(frozen=True)
class Tile:
    """A read window and its *core*: the part of the scene this tile alone is responsible for.

    Cores of all tiles of a grid partition the scene exactly, so stitching cores reproduces the
    input bit for bit whatever the overlap.
    """

    row: int
    col: int
    window: Window
    core: Window

    def core_in_tile(self) -> tuple[slice, slice]:
        """Slices of the core inside the tile's own array."""
        r0 = int(self.core.row_off - self.window.row_off)
        c0 = int(self.core.col_off - self.window.col_off)
        return slice(r0, r0 + int(self.core.height)), slice(c0, c0 + int(self.core.width))


def _axis_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] + tile < size:
        starts.append(size - tile)  # snap the last tile to the edge: no padding needed inside a scene
    return starts


def _axis_cores(starts: list[int], size: int, tile: int) -> list[tuple[int, int]]:
    bounds = [0]
    for a, b in zip(starts[:-1], starts[1:]):
        bounds.append((b + min(a + tile, size)) // 2)  # middle of the overlap of consecutive tiles
    bounds.append(size)
    return list(zip(bounds[:-1], bounds[1:]))


def tile_grid(
    height: int,
    width: int,
    tile: int,
    overlap: int = 0,
    *,
    bounds: tuple[int, int, int, int] | None = None,
) -> list[Tile]:
    """Overlapping tile windows covering a scene (or the sub-rectangle ``bounds`` = row0, col0, row1, col1).

    Stride is ``tile - overlap``; the last row/column of tiles is snapped to the edge, so every
    window lies inside the scene (scenes smaller than a tile give one smaller window).
    """
    if tile <= 0:
        raise VHRFMInputError("tile size must be positive", found=tile)
    if not 0 <= overlap < tile:
        raise VHRFMInputError("overlap must be in [0, tile)", expected=f"0..{tile - 1}", found=overlap)
    r0, c0, r1, c1 = bounds if bounds is not None else (0, 0, height, width)
    h, w = r1 - r0, c1 - c0
    if h <= 0 or w <= 0:
        raise VHRFMInputError("empty area to tile", found=f"{h}x{w}")
    stride = tile - overlap
    rs, cs = _axis_starts(h, tile, stride), _axis_starts(w, tile, stride)
    rcore, ccore = _axis_cores(rs, h, tile), _axis_cores(cs, w, tile)
    th, tw = min(tile, h), min(tile, w)
    tiles = []
    for i, (r, (cr0, cr1)) in enumerate(zip(rs, rcore)):
        for j, (c, (cc0, cc1)) in enumerate(zip(cs, ccore)):
            tiles.append(
                Tile(
                    row=i,
                    col=j,
                    window=Window(c0 + c, r0 + r, tw, th),
                    core=Window(c0 + cc0, r0 + cr0, cc1 - cc0, cr1 - cr0),
                )
            )
    return tiles


def iter_tiles(
    path: str | os.PathLike,
    tile: int,
    overlap: int = 0,
    *,
    bands: Sequence[int] | None = None,
    pad: bool = False,
    skip_empty: bool = True,
    **checks,
) -> Iterator[tuple[Tile, np.ndarray, np.ndarray]]:
    """Stream (tile, data, valid) over a raster, one window at a time."""
    with open_raster(path, **checks) as src:
        for t in tile_grid(src.height, src.width, tile, overlap):
            data, valid = read_window(src, t.window, bands=bands, out_size=tile if pad else None)
            if skip_empty and not valid.any():
                continue
            yield t, data, valid


class Stitcher:
    """Assemble per-tile arrays back into a scene by writing each tile's core.

    ``sink`` is either ``None`` (an in-memory array is allocated) or a :class:`RasterWriter`, in
    which case memory stays at one tile whatever the scene size.
    """

    def __init__(self, height: int, width: int, count: int, dtype="float32", sink: RasterWriter | None = None, fill=0):
        self.height, self.width, self.count = height, width, count
        self.sink = sink
        self.array = None if sink is not None else np.full((count, height, width), fill, dtype=dtype)
        self._written = 0

    def add(self, tile: Tile, data: np.ndarray) -> None:
        if data.ndim == 2:
            data = data[None]
        rs, cs = tile.core_in_tile()
        core = data[:, rs, cs]
        if self.sink is not None:
            self.sink.write(core, tile.core)
        else:
            r0, c0 = int(tile.core.row_off), int(tile.core.col_off)
            self.array[:, r0 : r0 + core.shape[1], c0 : c0 + core.shape[2]] = core
        self._written += core.shape[1] * core.shape[2]

    @property
    def complete(self) -> bool:
        return self._written == self.height * self.width


def atomic_path(path: str | os.PathLike) -> tuple[Path, Path]:
    """A temporary sibling of ``path`` to write first and rename into place when complete."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    return final, Path(tmp)


class RasterWriter:
    """Window-by-window GeoTIFF writer; the output appears (as a COG when ``cog``) only on success.

    Use as a context manager. If the block raises, the temporary file is deleted and no output is
    left behind.
    """

    def __init__(self, path, *, width: int, height: int, count: int, dtype="float32", crs=None, transform=None,
                 nodata=None, cog: bool = True, tags: dict | None = None, band_descriptions: Sequence[str] | None = None):
        self.final, self.tmp = atomic_path(path)
        self.cog = cog
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs,
                       transform=transform if transform is not None else rasterio.transform.Affine.identity(),
                       nodata=nodata, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
        if width < 256 or height < 256:
            profile.update(tiled=False, blockxsize=None, blockysize=None)
            profile = {k: v for k, v in profile.items() if v is not None or k in ("crs", "nodata")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.dst = rasterio.open(self.tmp, "w", **profile)
        if tags:
            self.dst.update_tags(**{k: str(v) for k, v in tags.items()})
        if band_descriptions:
            for i, d in enumerate(band_descriptions, start=1):
                self.dst.set_band_description(i, d)

    def write(self, data: np.ndarray, window: Window) -> None:
        if data.ndim == 2:
            data = data[None]
        self.dst.write(data.astype(self.dst.dtypes[0], copy=False), window=window)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.dst.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return False
        if self.cog:
            cog_tmp = self.tmp.with_suffix(".cog")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    rasterio.shutil.copy(self.tmp, cog_tmp, driver="COG", compress="deflate")
            finally:
                self.tmp.unlink(missing_ok=True)
            os.replace(cog_tmp, self.final)
        else:
            os.replace(self.tmp, self.final)
        return False


def write_geotiff(path, array: np.ndarray, *, crs=None, transform=None, nodata=None, cog: bool = True, **kw) -> Path:
    """Write a (C, H, W) or (H, W) array as a GeoTIFF (COG by default), atomically."""
    if array.ndim == 2:
        array = array[None]
    c, h, w = array.shape
    with RasterWriter(path, width=w, height=h, count=c, dtype=str(array.dtype), crs=crs, transform=transform,
                      nodata=nodata, cog=cog, **kw) as wr:
        wr.write(array, Window(0, 0, w, h))
    return Path(path)


def write_geojson(path, gdf) -> Path:
    """Write a GeoDataFrame (or an iterable of GeoJSON features) as GeoJSON, atomically."""
    final, tmp = atomic_path(path)
    try:
        if hasattr(gdf, "to_json"):
            text = gdf.to_json(drop_id=True)
        else:
            text = json.dumps({"type": "FeatureCollection", "features": list(gdf)})
        tmp.write_text(text)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final
