"""Per-sensor normalisation statistics, computed from the data window by window.

Statistics are kept per *product* of a source (``<source>/<product>``, e.g.
``spacenet_rotterdam_wv2/ms``): two products of one sensor can have different radiometric scales
(11-bit counts, reflectance floats, 8-bit renders), so pooling them per sensor would mix units. Each
entry names its sensor, bands and wavelengths, and is stored with every checkpoint that uses it.

Integer rasters get exact percentiles from a full histogram; float rasters from a seeded reservoir
of at most ``RESERVOIR`` values per band.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vhrfm.errors import VHRFMInputError

RESERVOIR = 1_000_000
PERCENTILES = (1, 2, 50, 98, 99)


class _BandAccumulator:
    def __init__(self, dtype: np.dtype, seed: int):
        self.kind = np.dtype(dtype).kind
        self.n = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.hist = np.zeros(1 << 16, dtype=np.int64) if self.kind in "ui" else None
        self.reservoir: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        v = values.astype(np.float64)
        self.n += v.size
        self.sum += float(v.sum())
        self.sumsq += float(np.square(v).sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        if self.hist is not None and values.min() >= 0 and values.max() < self.hist.size:
            self.hist += np.bincount(values.astype(np.int64).ravel(), minlength=self.hist.size)
        else:
            self.hist = None
            keep = min(v.size, max(1, RESERVOIR // 64))
            self.reservoir.append(self.rng.choice(v.ravel(), size=keep, replace=False))

    def result(self) -> dict:
        if self.n == 0:
            raise VHRFMInputError("no valid pixels to compute statistics from")
        mean = self.sum / self.n
        std = float(np.sqrt(max(self.sumsq / self.n - mean * mean, 0.0)))
        if self.hist is not None:
            cdf = np.cumsum(self.hist) / self.hist.sum()
            pct = {f"p{q:02d}": float(np.searchsorted(cdf, q / 100.0)) for q in PERCENTILES}
        else:
            pool = np.concatenate(self.reservoir)
            if pool.size > RESERVOIR:
                pool = self.rng.choice(pool, RESERVOIR, replace=False)
            pct = {f"p{q:02d}": float(np.percentile(pool, q)) for q in PERCENTILES}
        return {"mean": mean, "std": std if std > 0 else 1.0, "min": self.min, "max": self.max, **pct}


def band_statistics(arrays: Iterable[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> dict:
    """Per-band statistics over (data C x H x W, valid H x W) pairs; only valid pixels count."""
    accs: list[_BandAccumulator] | None = None
    n_tiles = 0
    for data, valid in arrays:
        if accs is None:
            accs = [_BandAccumulator(data.dtype, seed + b) for b in range(data.shape[0])]
        for b, acc in enumerate(accs):
            acc.add(data[b][valid])
        n_tiles += 1
    if accs is None:
        raise VHRFMInputError("no tiles to compute statistics from")
    per_band = [a.result() for a in accs]
    out = {k: [pb[k] for pb in per_band] for k in per_band[0]}
    out["n_pixels"] = int(accs[0].n)
    out["n_tiles"] = n_tiles
    return out


@dataclass(frozen=True)
class Normalizer:
    """(x - mean) / std per band, from one statistics entry."""

    mean: np.ndarray
    std: np.ndarray
    bands: tuple[str, ...] = ()

    @classmethod
    def from_stats(cls, entry: dict) -> Normalizer:
        return cls(np.asarray(entry["mean"], np.float32), np.asarray(entry["std"], np.float32), tuple(entry.get("bands", ())))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != self.mean.size:
            raise VHRFMInputError("band count does not match the normalisation statistics",
                                  expected=f"{self.mean.size} bands {list(self.bands)}", found=x.shape[0])
        return ((x.astype(np.float32) - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)


def stats_key(source: str, product: str) -> str:
    return f"{source}/{product}"


def save_stats(stats: dict, path: str | Path) -> None:
    from vhrfm.data.io import atomic_path

    final, tmp = atomic_path(path)
    tmp.write_text(json.dumps(stats, indent=1, sort_keys=True))
    tmp.replace(final)


def load_stats(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise VHRFMInputError("normalisation statistics not found: run the `data` stage (dvc repro)", path=p)
    return json.loads(p.read_text())


def stretch(x: np.ndarray, low: Sequence[float] | None = None, high: Sequence[float] | None = None,
            q: tuple[float, float] = (2, 98)) -> np.ndarray:
    """Linear stretch of (C, H, W) to [0, 1] per band, by given bounds or the sample's percentiles (display only)."""
    x = x.astype(np.float32)
    if low is None or high is None:
        finite = np.isfinite(x)
        low = [np.percentile(b[f], q[0]) if f.any() else 0 for b, f in zip(x, finite)]
        high = [np.percentile(b[f], q[1]) if f.any() else 1 for b, f in zip(x, finite)]
    lo = np.asarray(low, np.float32)[:, None, None]
    hi = np.asarray(high, np.float32)[:, None, None]
    return np.clip((x - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
