"""Figures shared by the chapters: thumbnails, band histograms, spectral bands, maps."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from vhrfm.sensors import SENSORS


def wavelength_colour(nm: float):
    """A display colour for a wavelength: visible spectrum hues, grey for PAN-wide, dark red beyond 700 nm."""
    if nm < 380:
        return (0.4, 0.0, 0.6)
    if nm > 700:
        return (0.45, 0.0, 0.0) if nm < 1000 else (0.25, 0.15, 0.1)
    return plt.get_cmap("turbo")((nm - 400) / 300)


def band_histograms(ax, values: np.ndarray, wavelengths: Sequence[float], names: Sequence[str], bins: int = 80):
    """Per-band histograms of raw values (N x C) on one axis, each coloured by its wavelength."""
    lo, hi = np.percentile(values, 0.1), np.percentile(values, 99.9)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
    for b, (wl, name) in enumerate(zip(wavelengths, names)):
        colour = (0.3, 0.3, 0.3) if name == "pan" else wavelength_colour(wl)
        ax.hist(values[:, b], bins=edges, histtype="step", lw=1.2, color=colour, label=f"{name} ({wl:.0f} nm)", density=True)
    ax.set_yticks([])
    ax.legend(fontsize=6, frameon=False)
    return ax


def spectral_bands(ax=None, sensor_ids: Sequence[str] | None = None, max_nm: float = 1100):
    """The registry's bands drawn against wavelength, one row per sensor (PAN as a grey bar)."""
    ids = list(sensor_ids or SENSORS)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.45 * len(ids) + 1))
    for row, sid in enumerate(ids):
        for b in SENSORS[sid].bands:
            if b.lower_nm > max_nm:
                continue
            colour = (0.6, 0.6, 0.6, 0.5) if b.group == "pan" else wavelength_colour(b.center_nm)
            h = 0.8 if b.group == "pan" else 0.5
            ax.add_patch(plt.Rectangle((b.lower_nm, row - h / 2), b.width_nm, h, color=colour, alpha=0.55 if b.group != "pan" else 0.35, lw=0))
    ax.set_yticks(range(len(ids)), [SENSORS[s].name for s in ids], fontsize=7)
    ax.set_xlim(380, max_nm)
    ax.set_ylim(-0.7, len(ids) - 0.3)
    ax.set_xlabel("wavelength (nm)")
    ax.invert_yaxis()
    return ax


def footprint_map(gdf, tooltip: Sequence[str] = ("source", "sensor", "gsd_m", "path")):
    """A folium map of footprints (EPSG:4326 GeoDataFrame), one colour per source."""
    import folium

    m = folium.Map(tiles=None, control_scale=True)
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap (needs internet to show tiles)").add_to(m)
    palette = plt.get_cmap("tab10")
    for i, (source, g) in enumerate(gdf.groupby("source")):
        c = "#%02x%02x%02x" % tuple(int(255 * x) for x in palette(i % 10)[:3])
        folium.GeoJson(g.to_json(), name=source, tooltip=folium.GeoJsonTooltip(fields=list(tooltip)),
                       style_function=lambda _f, c=c: {"color": c, "fillColor": c, "weight": 2, "fillOpacity": 0.3}).add_to(m)
    minx, miny, maxx, maxy = gdf.total_bounds
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    folium.LayerControl().add_to(m)
    return m
