"""Whole-scene prediction: stream a GeoTIFF in overlapping windows, stitch, write GeoTIFF / GeoJSON / map.

Memory stays flat in the scene size: windows are read, predicted and written one batch at a time
(each tile writes only its *core*, so no averaging buffer is needed), polygons are traced strip by
strip and merged, and quicklooks are decimated reads. Every output is written into a staging folder
first and moved into place only when all of them exist, so a failure leaves nothing partial behind.

Outputs in ``out_dir`` (``<stem>`` = the scene's file name without suffix):
``<stem>_prob.tif`` (float32 COG, probability of the positive class, nodata -1),
``<stem>_mask.tif`` (uint8 COG: 1 positive, 0 negative, 255 nodata),
``<stem>_polygons.geojson`` (EPSG:4326, simplified, with area), ``<stem>_map.html`` (folium),
``<stem>_preview.png`` and ``<stem>_summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm.auto import tqdm

from vhrfm.apps.taskmodel import TaskModel
from vhrfm.data.io import RasterWriter, Stitcher, open_raster, read_window, tile_grid
from vhrfm.errors import VHRFMInputError
from vhrfm.timing import significant

PROB_NODATA = -1.0
MASK_NODATA = 255
EARTH_RADIUS_M = 6_371_008.8


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def pixel_size_m(src) -> float:
    """Ground sampling distance in metres (geographic CRS: at the scene centre, mean of both axes)."""
    if src.crs is None:
        raise VHRFMInputError("raster has no CRS but one is needed here", expected="a georeferenced raster", found="no CRS",
                              path=src.name)
    rx, ry = abs(src.transform.a), abs(src.transform.e)
    if src.crs.is_geographic:
        lat = math.radians(src.xy(src.height // 2, src.width // 2)[1])
        return float((rx * math.cos(lat) + ry) / 2 * math.pi / 180 * EARTH_RADIUS_M)
    return float((rx + ry) / 2 * src.crs.linear_units_factor[1])


def row_pixel_areas_m2(src, row0: int, nrows: int) -> np.ndarray:
    """Area (m²) of one pixel in each of ``nrows`` rows from ``row0`` (exact on the sphere for geographic CRSs)."""
    rx, ry = abs(src.transform.a), abs(src.transform.e)
    if not src.crs.is_geographic:
        f = src.crs.linear_units_factor[1]
        return np.full(nrows, rx * ry * f * f)
    rows = np.arange(row0, row0 + nrows)
    lat_top = src.transform.f + src.transform.e * rows
    lat_bot = lat_top + src.transform.e
    band = np.abs(np.sin(np.radians(lat_top)) - np.sin(np.radians(lat_bot)))
    return EARTH_RADIUS_M**2 * np.radians(rx) * band


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise VHRFMInputError("output path exists and is not a folder", path=out_dir)


def _threshold(model: TaskModel, threshold: float | None) -> float:
    thr = float(model.threshold if threshold is None else threshold)
    if not 0.0 <= thr <= 1.0:
        raise VHRFMInputError("threshold must be a probability", expected="0..1", found=thr)
    return thr


def _distribution_notes(model: TaskModel, gsd_m: float) -> list[str]:
    """Warnings for a scene outside the model's training distribution (GSD, band set)."""
    notes = []
    train_gsd = float(model.card["gsd_m"])
    if not 0.5 <= gsd_m / train_gsd <= 2.0:
        notes.append(f"scene GSD {gsd_m:.2f} m is far from the training GSD {train_gsd:.2f} m: out of the "
                     "training distribution, check the output before use")
    if model.card.get("trained_bands") and model.card["trained_bands"] != model.card["bands"]:
        notes.append(f"bands {model.card['bands']} differ from the training bands {model.card['trained_bands']} "
                     "(normalised by the scene's statistics): out of the training distribution")
    return notes


@contextmanager
def staged_outputs(out_dir: Path):
    """A staging folder inside ``out_dir`` whose files move into ``out_dir`` only when the block succeeds; on any
    error it is removed (and ``out_dir`` too when this call created it and it is empty)."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".vhrfm-partial-", dir=out_dir))
    ok = False
    try:
        yield stage
        for f in stage.iterdir():  # every output exists: move them into place
            os.replace(f, out_dir / f.name)
        ok = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not ok and created and out_dir.exists() and not any(out_dir.iterdir()):
            out_dir.rmdir()


def _polygons(mask_path: Path, strip: int, simplify_px: float, min_area_m2: float):
    """Positive-class polygons of a mask raster, traced strip by strip and merged across strip borders."""
    import geopandas as gpd
    from rasterio.features import shapes
    from shapely.geometry import shape
    from shapely.ops import unary_union

    geoms = []
    with rasterio.open(mask_path) as src:
        crs, res = src.crs, abs(src.transform.a)
        for r0 in range(0, src.height, strip):
            w = Window(0, r0, src.width, min(strip, src.height - r0))
            m = src.read(1, window=w)
            pos = m == 1
            if not pos.any():
                continue
            t = src.window_transform(w)
            geoms.extend(shape(g) for g, _ in shapes(pos.astype(np.uint8), mask=pos, transform=t))
    if not geoms:
        return gpd.GeoDataFrame({"area_m2": [], "area_ha": []}, geometry=[], crs=crs)
    merged = unary_union(geoms)
    parts = list(getattr(merged, "geoms", [merged]))
    gdf = gpd.GeoDataFrame(geometry=parts, crs=crs)
    if simplify_px > 0:
        gdf["geometry"] = gdf.geometry.simplify(simplify_px * res, preserve_topology=True)
    gdf = gdf[~gdf.geometry.is_empty]
    metric = gdf.to_crs(gdf.estimate_utm_crs()) if crs.is_geographic or crs.linear_units_factor[1] != 1.0 else gdf
    gdf["area_m2"] = metric.geometry.area.round(1).to_numpy()
    gdf = gdf[gdf.area_m2 >= min_area_m2].sort_values("area_m2", ascending=False).reset_index(drop=True)
    gdf["area_ha"] = (gdf.area_m2 / 1e4).round(4)
    gdf.insert(0, "id", np.arange(1, len(gdf) + 1))
    return gdf.to_crs("EPSG:4326")


def _quicklook(path: Path, max_side: int, bands=None, resampling=None):
    """A decimated read (memory bounded by ``max_side``), with its bounds in EPSG:4326 for maps."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src:
        vrt = WarpedVRT(src, crs="EPSG:4326", resampling=resampling or Resampling.bilinear) if src.crs and \
            not src.crs.is_geographic else None
        ds = vrt or src
        scale = max(ds.width, ds.height) / max_side
        shape = (max(1, int(ds.height / max(scale, 1))), max(1, int(ds.width / max(scale, 1))))
        idx = bands or list(range(1, ds.count + 1))
        data = ds.read(idx, out_shape=(len(idx), *shape), resampling=resampling or Resampling.bilinear)
        b = ds.bounds
        if vrt is not None:
            vrt.close()
    return data, (b.left, b.bottom, b.right, b.top)


def _rgb(data: np.ndarray, wavelengths) -> np.ndarray:
    from vhrfm.data.datasets import true_colour

    x = data.astype(np.float32)
    return true_colour(x, wavelengths) if x.shape[0] > 1 else np.repeat(true_colour(x, wavelengths)[..., :1], 3, -1)


def _overlay_map(image: np.ndarray, bounds, cmap=None, opacity: float = 1.0, **map_kw):
    """A folium map over OpenStreetMap with ``image`` (a scene quicklook) overlaid on ``bounds`` (EPSG:4326
    left, bottom, right, top); the caller adds its layers and saves it with :func:`_save_map`."""
    import base64
    import io

    import folium
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, image, format="png", cmap=cmap)
    m = folium.Map(tiles=None, control_scale=True, **map_kw)
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap (needs internet to show tiles)").add_to(m)
    folium.raster_layers.ImageOverlay("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
                                      bounds=[[bounds[1], bounds[0]], [bounds[3], bounds[2]]], name="scene",
                                      opacity=opacity).add_to(m)
    return m


def _save_map(m, bounds, html: Path) -> None:
    import folium

    m.fit_bounds([[bounds[1], bounds[0]], [bounds[3], bounds[2]]])
    folium.LayerControl().add_to(m)
    m.save(str(html))


def _write_map(html: Path, png: Path, scene: Path, prob: Path, gdf, wavelengths, title: str, max_side: int = 1024):
    import folium
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rasterio.enums import Resampling

    img, bounds = _quicklook(scene, max_side)
    rgb = _rgb(img, wavelengths)
    p, _ = _quicklook(prob, max_side, resampling=Resampling.nearest)
    p = p[0]
    # static preview: scene, probability, polygons
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    ext = (bounds[0], bounds[2], bounds[1], bounds[3])
    axes[0].imshow(rgb, extent=ext)
    if len(gdf):
        gdf.boundary.plot(ax=axes[0], color="red", linewidth=0.6)
    axes[0].set_title("scene (true colour) and predicted polygons", fontsize=9)
    im = axes[1].imshow(np.ma.masked_less(p, 0), extent=ext, cmap="inferno", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="probability")
    axes[1].set_title("probability", fontsize=9)
    for ax in axes:
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    # interactive map: scene quicklook + polygons over OpenStreetMap
    m = _overlay_map(rgb, bounds, opacity=0.9)
    if len(gdf):
        folium.GeoJson(gdf.to_json(drop_id=True), name="prediction",
                       tooltip=folium.GeoJsonTooltip(fields=["id", "area_ha"]),
                       style_function=lambda _f: {"color": "#ff2200", "fillColor": "#ff7700", "weight": 1.5,
                                                  "fillOpacity": 0.35}).add_to(m)
    _save_map(m, bounds, html)


def iter_batches(src, grid, tile: int, batch_size: int):
    """(tiles, raw (B, C, tile, tile) float32, valid (B, tile, tile)) for consecutive batches of ``grid``."""
    for b0 in range(0, len(grid), batch_size):
        batch = grid[b0:b0 + batch_size]
        reads = [read_window(src, t.window, out_size=tile) for t in batch]
        yield batch, np.stack([r[0] for r in reads]).astype(np.float32), np.stack([r[1] for r in reads])


def scene_statistics(src, max_side: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std of a scene's valid pixels from a decimated read (memory bounded by ``max_side``)."""
    scale = max(1.0, max(src.height, src.width) / max_side)
    shape = (src.count, max(1, int(src.height / scale)), max(1, int(src.width / scale)))
    data = src.read(out_shape=shape).astype(np.float64)
    valid = np.ones(shape[1:], bool)
    if src.nodata is not None:
        valid &= ~np.all(data == src.nodata, axis=0)
    valid &= np.all(np.isfinite(data), axis=0)
    if not valid.any():
        raise VHRFMInputError("scene holds only nodata", path=src.name)
    v = data[:, valid]
    return v.mean(1), np.maximum(v.std(1), 1e-6)


def adapt_to_scene(model: TaskModel, scene: str | Path, sensor: str | None = None, bands=None) -> TaskModel:
    """The model for this scene's band set: unchanged when no sensor is named (the scene must then have the
    model's bands, in order); otherwise the named sensor's bands, normalised by the scene's own statistics."""
    if sensor is None and not bands:
        return model
    from vhrfm.sensors import get_sensor

    s = get_sensor(sensor) if sensor else None
    if s is None:
        raise VHRFMInputError("--bands needs --sensor (band names are looked up in its registry entry)", found=bands)
    with open_raster(scene) as src:
        count = src.count
        if bands:
            names = [b.strip() for b in (bands.split(",") if isinstance(bands, str) else bands)]
        elif count == 1 and "pan" in s.band_names("pan"):
            names = ["pan"]
        elif count == len(s.band_names("ms")):
            names = s.band_names("ms")
        else:
            raise VHRFMInputError(f"cannot tell which {s.id} bands the scene holds: name them with --bands",
                                  expected=f"1 (pan) or {len(s.band_names('ms'))} (ms {s.band_names('ms')})", found=count,
                                  path=scene)
        s.check_band_count(count, names)
        mean, std = scene_statistics(src)
    return model.for_bands(names, s.wavelengths(names), s.widths(names), mean, std)


def predict_array(model: TaskModel, image: np.ndarray, gsd: float, *, tile: int | None = None, overlap: int = 32,
                  batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Probabilities for an in-memory image (C, H, W) of raw band values, with the same windows and stitching
    as :func:`predict_scene` (for images without georeference, e.g. a quick look; nothing is written)."""
    if image.ndim != 3 or image.shape[0] != model.n_bands:
        raise VHRFMInputError("band count does not match the model", expected=f"{model.n_bands} bands {model.card['bands']}",
                              found=image.shape[0] if image.ndim == 3 else image.shape)
    tile = int(tile or model.card.get("tile_size", 256))
    H, W = image.shape[1:]
    grid = tile_grid(H, W, tile, min(overlap, tile - 1))
    st = Stitcher(H, W, 1, fill=PROB_NODATA)
    for b0 in tqdm(range(0, len(grid), batch_size), desc="predict", disable=not progress):
        batch = grid[b0:b0 + batch_size]
        raw = np.zeros((len(batch), image.shape[0], tile, tile), np.float32)
        valid = np.zeros((len(batch), tile, tile), bool)
        for k, t in enumerate(batch):
            h, w = int(t.window.height), int(t.window.width)
            raw[k, :, :h, :w] = image[:, t.window.row_off:t.window.row_off + h, t.window.col_off:t.window.col_off + w]
            valid[k, :h, :w] = True
        for t, p in zip(batch, model.probs(raw, gsd=gsd, valid=valid)):
            st.add(t, p[:int(t.window.height), :int(t.window.width)])
    return st.array[0]


def predict_scene(scene: str | Path, model: TaskModel, out_dir: str | Path, *, tile: int | None = None, overlap: int = 32,
                  batch_size: int = 8, threshold: float | None = None, min_area_m2: float | None = None,
                  simplify_px: float = 1.0, write_map: bool = True, progress: bool = True, cloud_mask: bool = True,
                  fail_after_tiles: int | None = None) -> dict:
    """Map one scene with ``model``; returns the summary (also written as JSON). See the module docstring.

    ``min_area_m2`` drops polygons smaller than this (default: 4 pixels). With ``cloud_mask`` and a cloud rule in
    the model's card, pixels the rule flags are written as unknown (nodata) in the mask and left out of the burned
    area and polygons; the probability raster keeps them. ``fail_after_tiles`` raises
    after that many tiles (tests use it to prove that nothing partial is left behind).
    """
    t_start = time.perf_counter()
    scene, out_dir = Path(scene), Path(out_dir)
    _check_out_dir(out_dir)
    tile = int(tile or model.card.get("tile_size", 256))
    thr = _threshold(model, threshold)
    stem = scene.stem
    timing = {"read_s": 0.0, "model_s": 0.0, "write_s": 0.0}
    with open_raster(scene, expected_bands=model.n_bands, require_crs=True) as src:
        gsd = pixel_size_m(src)
        H, W = src.height, src.width
        crs, transform = src.crs, src.transform
        grid = tile_grid(H, W, tile, min(overlap, tile - 1) if tile > 1 else 0)
        with staged_outputs(out_dir) as stage:
            n_valid = n_pos = n_cloud = 0
            area_m2 = cloud_m2 = 0.0
            prob_path, mask_path = stage / f"{stem}_prob.tif", stage / f"{stem}_mask.tif"
            tags = {"model": model.card.get("name", ""), "task": model.card.get("task", ""), "threshold": thr,
                    "software": "vhrfm"}
            with RasterWriter(prob_path, width=W, height=H, count=1, dtype="float32", crs=crs, transform=transform,
                              nodata=PROB_NODATA, tags=tags, band_descriptions=["probability"]) as pw, \
                    RasterWriter(mask_path, width=W, height=H, count=1, dtype="uint8", crs=crs, transform=transform,
                                 nodata=MASK_NODATA, tags=tags, band_descriptions=["mask"]) as mw:
                ps, ms = Stitcher(H, W, 1, sink=pw), Stitcher(H, W, 1, sink=mw)
                bar = tqdm(total=len(grid), desc=f"predict {scene.name}", unit="tile", disable=not progress)
                t0 = time.perf_counter()
                for b0, (batch, raw, valid) in zip(range(0, len(grid), batch_size), iter_batches(src, grid, tile, batch_size)):
                    t1 = time.perf_counter()
                    prob = model.probs(raw, gsd=gsd, valid=valid)
                    clouds = model.cloud(raw) if cloud_mask else None
                    clouds = np.zeros_like(valid) if clouds is None else clouds & valid
                    t2 = time.perf_counter()
                    for t, p, v, cl in zip(batch, prob, valid, clouds):
                        h, w = int(t.window.height), int(t.window.width)
                        p, v, cl = p[:h, :w], v[:h, :w], cl[:h, :w]
                        rs, cs = t.core_in_tile()
                        core_v, core_p, core_c = v[rs, cs], p[rs, cs], cl[rs, cs]
                        pos = (core_p >= thr) & core_v & ~core_c
                        ps.add(t, np.where(v, p, PROB_NODATA).astype(np.float32))
                        ms.add(t, np.where(v & ~cl, p >= thr, MASK_NODATA).astype(np.uint8))
                        n_valid += int(core_v.sum())
                        n_pos += int(pos.sum())
                        n_cloud += int(core_c.sum())
                        areas = row_pixel_areas_m2(src, int(t.core.row_off), int(t.core.height))
                        area_m2 += float((pos.sum(1) * areas).sum())
                        cloud_m2 += float((core_c.sum(1) * areas).sum())
                    timing["read_s"] += t1 - t0
                    timing["model_s"] += t2 - t1
                    t0 = time.perf_counter()
                    timing["write_s"] += t0 - t2
                    bar.update(len(batch))
                    if fail_after_tiles is not None and b0 + len(batch) >= fail_after_tiles:
                        raise RuntimeError(f"failing on purpose after {fail_after_tiles} tiles (test hook)")
                bar.close()
                if not (ps.complete and ms.complete):
                    raise RuntimeError("stitching did not cover the scene exactly (bug)")
            # (the COG conversion happens as the writers close: it counts in the total, not in write_s)
            t3 = time.perf_counter()
            gdf = _polygons(mask_path, strip=max(tile * 4, 1024), simplify_px=simplify_px,
                            min_area_m2=4 * gsd * gsd if min_area_m2 is None else min_area_m2)
            from vhrfm.data.io import write_geojson

            write_geojson(stage / f"{stem}_polygons.geojson", gdf)
            timing["vector_s"] = time.perf_counter() - t3
            t4 = time.perf_counter()
            if write_map:
                _write_map(stage / f"{stem}_map.html", stage / f"{stem}_preview.png", scene, prob_path, gdf,
                           model.card["wavelengths"], f"{model.card.get('task', '')}: {scene.name} "
                           f"({model.card.get('name', '')}, threshold {thr:.2f})")
            timing["map_s"] = time.perf_counter() - t4
            total = time.perf_counter() - t_start
            notes = _distribution_notes(model, gsd)
            if n_cloud:
                notes.append(f"{n_cloud / max(n_valid, 1):.1%} of the valid pixels flagged as cloud (bright in every visible "
                             "band; the card's rule) and left out of the burned area: written as nodata in the mask "
                             "(--no-cloud-mask keeps them)")
            summary = {
                "scene": str(scene), "task": model.card.get("task"), "model": model.card.get("name"),
                "model_kind": model.card.get("kind"), "threshold": thr, "tta": model.tta,
                "width": W, "height": H, "bands": model.card["bands"], "crs": crs.to_string(), "gsd_m": round(gsd, 4),
                "tile": tile, "overlap": int(overlap), "tiles": len(grid),
                "valid_pixels": n_valid, "positive_pixels": n_pos,
                "positive_fraction_of_valid": round(n_pos / n_valid, 6) if n_valid else 0.0,
                "area_km2": round(area_m2 / 1e6, 6), "polygons": int(len(gdf)),
                "cloud_pixels": n_cloud, "cloud_km2": round(cloud_m2 / 1e6, 6),
                "cloud_rule": model.card.get("cloud_mask") if cloud_mask else None,
                "polygons_area_km2": round(float(gdf.area_m2.sum()) / 1e6, 6) if len(gdf) else 0.0,
                "runtime_s": round(total, 6), "mpx_per_s": round(H * W / 1e6 / total, 3),
                "model_mpx_per_s": round(H * W / 1e6 / max(timing["model_s"], 1e-9), 3),
                "timing_s": {k: significant(v) for k, v in timing.items()},  # a fast stage keeps its time
                "peak_rss_mb": round(peak_rss_mb(), 1), "notes": notes,
                "outputs": {k: f"{stem}_{k}.{ext}" for k, ext in (("prob", "tif"), ("mask", "tif"), ("polygons", "geojson"),
                                                                  ("summary", "json"))},
            }
            if write_map:
                summary["outputs"].update(map=f"{stem}_map.html", preview=f"{stem}_preview.png")
            (stage / f"{stem}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def nms_points(points: np.ndarray, radius_px: float) -> np.ndarray:
    """Greedy non-maximum suppression of (k, 3) rows (row, col, score): highest score first, neighbours within
    ``radius_px`` of a kept point dropped (one animal seen by two overlapping windows counts once)."""
    if len(points) < 2:
        return points
    from scipy.spatial import cKDTree

    order = np.argsort(-points[:, 2], kind="stable")
    pts = points[order]
    tree = cKDTree(pts[:, :2])
    alive = np.ones(len(pts), bool)
    for i in range(len(pts)):
        if alive[i]:
            for j in tree.query_ball_point(pts[i, :2], radius_px):
                if j > i:
                    alive[j] = False
    return pts[alive]


def _points_preview(png: Path, scene: Path, pts: np.ndarray, wavelengths, title: str, max_side: int = 1024):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with rasterio.open(scene) as src:
        scale = max(1.0, max(src.height, src.width) / max_side)
        img = src.read(out_shape=(src.count, max(1, int(src.height / scale)), max(1, int(src.width / scale))))
    fig, ax = plt.subplots(figsize=(7, 7 * img.shape[1] / max(img.shape[2], 1) + 0.5))
    ax.imshow(_rgb(img, wavelengths) if img.shape[0] >= 3 else img[0], cmap="gray")
    if len(pts):
        ax.scatter((pts[:, 1] + 0.5) / scale - 0.5, (pts[:, 0] + 0.5) / scale - 0.5, s=60, facecolors="none",
                   edgecolors="cyan", linewidths=1.0)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def predict_points_scene(scene: str | Path, model: TaskModel, out_dir: str | Path, *, tile: int = 256, overlap: int = 32,
                         batch_size: int = 8, threshold: float | None = None, gsd: float | None = None,
                         write_map: bool = True, progress: bool = True, fail_after_tiles: int | None = None) -> dict:
    """Detect animals as points over a whole scene: heat-map per window, peaks kept in each window's core,
    duplicates across window borders suppressed within the matching radius; GeoJSON points with scores,
    a count summary, a preview and (georeferenced scenes) a folium map. Nothing partial is left on error.

    A scene without CRS is accepted (photographs, chips in sensor geometry) when ``gsd`` is given: points
    are then in pixel coordinates (x = column, y = row, pixel centres) and the summary says so.
    """
    t_start = time.perf_counter()
    scene, out_dir = Path(scene), Path(out_dir)
    _check_out_dir(out_dir)
    dec = model.card.get("decoder", {})
    radius_m, min_score = float(dec.get("radius_m", 1.5)), float(dec.get("min_score", 0.05))
    thr = _threshold(model, threshold)
    stem = scene.stem
    notes = []
    with open_raster(scene, expected_bands=model.n_bands) as src:
        if src.crs is not None:
            gsd_m = pixel_size_m(src)
        elif gsd is None:
            raise VHRFMInputError("raster has no CRS, so its GSD is unknown: give it (--gsd, metres per pixel)",
                                  expected="a georeferenced raster, or --gsd", found="no CRS", path=scene)
        else:
            gsd_m = float(gsd)
            notes.append("no CRS: points are in pixel coordinates (x = column, y = row), not on the ground; no map")
        H, W = src.height, src.width
        grid = tile_grid(H, W, tile, min(overlap, tile - 1))
        with staged_outputs(out_dir) as stage:
            from vhrfm.apps.megafauna import find_peaks

            found = []
            bar = tqdm(total=len(grid), desc=f"detect {scene.name}", unit="tile", disable=not progress)
            for b0, (batch, raw, valid) in zip(range(0, len(grid), batch_size), iter_batches(src, grid, tile, batch_size)):
                heat = model.probs(raw, gsd=gsd_m, valid=valid)
                for t, hm, v in zip(batch, heat, valid):
                    h, w = int(t.window.height), int(t.window.width)
                    pk = find_peaks(hm[:h, :w], v[:h, :w], min_score)
                    rs, cs = t.core_in_tile()
                    inside = (pk[:, 0] >= rs.start) & (pk[:, 0] < rs.stop) & (pk[:, 1] >= cs.start) & (pk[:, 1] < cs.stop)
                    pk = pk[inside]
                    pk[:, 0] += t.window.row_off
                    pk[:, 1] += t.window.col_off
                    found.append(pk)
                bar.update(len(batch))
                if fail_after_tiles is not None and b0 + len(batch) >= fail_after_tiles:
                    raise RuntimeError(f"failing on purpose after {fail_after_tiles} tiles (test hook)")
            bar.close()
            allpk = nms_points(np.concatenate(found) if found else np.zeros((0, 3), np.float32), radius_m / gsd_m)
            det = allpk[allpk[:, 2] >= thr]
            import geopandas as gpd
            from shapely.geometry import Point

            props = {"id": np.arange(1, len(det) + 1), "score": np.round(det[:, 2], 4),
                     "class": model.card.get("positive_class", "animal"), "row": det[:, 0].astype(int),
                     "col": det[:, 1].astype(int)}
            if src.crs is not None:
                xs, ys = rasterio.transform.xy(src.transform, det[:, 0], det[:, 1], offset="center") if len(det) else ([], [])
                gdf = gpd.GeoDataFrame(props, geometry=[Point(x, y) for x, y in zip(np.atleast_1d(xs), np.atleast_1d(ys))],
                                       crs=src.crs).to_crs("EPSG:4326")
            else:
                gdf = gpd.GeoDataFrame(props, geometry=[Point(c + 0.5, r + 0.5) for r, c in det[:, :2]])
            from vhrfm.data.io import write_geojson

            # without a CRS the file name says the coordinates are pixels (GeoJSON readers would assume lon/lat)
            points_name = f"{stem}_points.geojson" if src.crs is not None else f"{stem}_points_pixels.geojson"
            write_geojson(stage / points_name, gdf)
            title = f"{model.card.get('task', '')}: {scene.name}: {len(det)} detections ({model.card.get('name', '')}, " \
                    f"threshold {thr:.2f})"
            if write_map:
                _points_preview(stage / f"{stem}_preview.png", scene, det, model.card["wavelengths"], title)
                if src.crs is not None:
                    _write_points_map(stage / f"{stem}_map.html", scene, gdf, model.card["wavelengths"])
            notes += _distribution_notes(model, gsd_m)
            total = time.perf_counter() - t_start
            summary = {
                "scene": str(scene), "task": model.card.get("task"), "model": model.card.get("name"),
                "model_kind": model.card.get("kind"), "threshold": thr, "tta": model.tta, "radius_m": radius_m,
                "width": W, "height": H, "bands": model.card["bands"], "crs": src.crs.to_string() if src.crs else None,
                "gsd_m": round(gsd_m, 4), "tile": tile, "overlap": int(overlap), "tiles": len(grid),
                "count": int(len(det)), "candidates_above_min_score": int(len(allpk)),
                "area_km2": round(H * W * gsd_m * gsd_m / 1e6, 6),
                "runtime_s": round(total, 6), "mpx_per_s": round(H * W / 1e6 / total, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1), "notes": notes,
                "outputs": {"points": points_name, "summary": f"{stem}_summary.json"},
            }
            if write_map:
                summary["outputs"]["preview"] = f"{stem}_preview.png"
                if src.crs is not None:
                    summary["outputs"]["map"] = f"{stem}_map.html"
            (stage / f"{stem}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _write_points_map(html: Path, scene: Path, gdf, wavelengths, max_side: int = 1024):
    import folium

    img, bounds = _quicklook(scene, max_side)
    m = _overlay_map(_rgb(img, wavelengths) if img.shape[0] >= 3 else img[0], bounds, cmap="gray", max_zoom=22)
    layer = folium.FeatureGroup(name="detections").add_to(m)
    for _, r in gdf.iterrows():
        folium.CircleMarker([r.geometry.y, r.geometry.x], radius=6, color="#00e5ff", fill=False,
                            tooltip=f"#{r['id']} {r['class']} score {r['score']:.2f}").add_to(layer)
    _save_map(m, bounds, html)


__all__ = ["predict_scene", "predict_points_scene", "nms_points", "adapt_to_scene", "scene_statistics", "iter_batches",
           "predict_array", "pixel_size_m", "row_pixel_areas_m2", "peak_rss_mb"]
