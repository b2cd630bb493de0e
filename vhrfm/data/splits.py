"""Spatially disjoint train / val / test splits, stored as files.

The unit of assignment is a *block*: a rectangle of an image (about ``block_size`` pixels a side,
blocks of equal size per image) or a whole image group. Images of the same ground (a PAN and an MS
file, two stereo views, pre and post) share a group and a fractional block grid, so one block of
ground lands in one split in all of them. Tiles are cut inside blocks only, so no two tiles of
different splits overlap. A source's published split (e.g. the seal tiles' test) is kept as it is,
never re-drawn.

A source may have its own tile size, overlap and block size (``per_source``), e.g. a 10 m scene whose
2.5 km blocks are worth as many as a VHR scene's. For a source whose items carry a label mask, blocks can be
allocated *stratified* by their positive share (``stratify``): blocks sorted by the share of positive
labelled pixels, each of val and test drawing one block per stratum of that order (seeded), so that val and
test see the same mix of burned and unburned ground as train rather than whatever the draw gives when a
scene has only a dozen blocks. Labels only steer which block goes where; every pixel of a block stays in one
split.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from vhrfm.data.io import raster_info, tile_grid
from vhrfm.data.sources import Item

SPLITS = ("train", "val", "test")
MANY_GROUPS = 10  # with at least this many image groups, whole groups are assigned (no blocks needed)

SPLIT_COLUMNS = ["source", "path", "product", "group", "block", "split", "row_off", "col_off", "height", "width"]


def _edges(size: int, n: int) -> np.ndarray:
    return np.linspace(0, size, n + 1).round().astype(int)


def _split_counts(n: int, fractions: dict[str, float]) -> tuple[int, int]:
    n_test = int(round(fractions.get("test", 0) * n))
    n_val = int(round(fractions.get("val", 0) * n))
    if n >= 3:
        n_test, n_val = max(1, n_test), max(1, n_val)
    n_test = min(n_test, n)
    return n_test, min(n_val, n - n_test)


def allocate(units: Sequence[str], fractions: dict[str, float], seed: int,
             scores: dict[str, float] | None = None) -> dict[str, str]:
    """Assign units to splits in the given fractions (seeded); with >= 3 units, val and test get >= 1.

    With ``scores`` (a number per unit, e.g. its positive share) the draw is stratified: test, then val, take
    one unit at random from each of as many equal strata of the remaining units, sorted by score, as they
    need units."""
    units = sorted(units)
    rng = np.random.default_rng(seed)
    n_test, n_val = _split_counts(len(units), fractions)
    if scores is None:
        order = [units[i] for i in rng.permutation(len(units))]
        return {u: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, u in enumerate(order)}
    missing = set(units) - set(scores)
    if missing:
        raise ValueError(f"stratified allocation: no score for {sorted(missing)[:3]}")
    jitter = rng.permutation(len(units))  # seeded tie-break among equal scores
    left = [u for _, _, u in sorted(zip((scores[u] for u in units), jitter, units))]
    out = {}
    for split, k in (("test", n_test), ("val", n_val)):
        if k == 0:
            continue
        for stratum in np.array_split(np.array(left, dtype=object), k):
            out[str(stratum[rng.integers(0, len(stratum))])] = split
        left = [u for u in left if u not in out]
    out.update({u: "train" for u in left})
    return out


def select_items(items: list[Item], max_items: int | None) -> list[Item]:
    """The first ``max_items`` images of each published split (all when None), for small profiles."""
    if max_items is None:
        return list(items)
    counts: dict = {}
    out = []
    for it in items:
        n = counts.get(it.published_split, 0)
        if n < max_items:
            out.append(it)
            counts[it.published_split] = n + 1
    return out


def source_setting(source: str, key: str, default, per_source: dict | None = None):
    """A split setting (``tile_size``, ``overlap``, ``block_size``, ``stratify``) of one source: its own entry in
    ``per_source`` (the profile's ``data.per_source``) or the default."""
    return ((per_source or {}).get(source) or {}).get(key, default)


def block_positive_share(item: Item, bounds: tuple[int, int, int, int]) -> float:
    """Share of positive (1) pixels among the labelled pixels of ``item``'s mask in ``bounds`` (row0, col0, row1,
    col1); pixels flagged by its ignore raster are not labelled. 0 for a block with no labelled pixel."""
    from rasterio.windows import Window

    from vhrfm.config import data_dir
    from vhrfm.data.io import open_raster

    r0, c0, r1, c1 = bounds
    win = Window(c0, r0, c1 - c0, r1 - r0)
    with open_raster(data_dir() / item.mask) as src:
        m = src.read(1, window=win)
    lab = np.ones(m.shape, bool)
    if item.ignore is not None:
        with open_raster(data_dir() / item.ignore) as src:
            lab = src.read(1, window=win) == 0
    lab &= m != 255
    return float((m[lab] == 1).mean()) if lab.any() else 0.0


def make_splits(
    items: list[Item],
    *,
    tile_size: int,
    overlap: int,
    block_size: int,
    fractions: dict[str, float],
    seed: int,
    per_source: dict | None = None,
) -> pd.DataFrame:
    """One row per tile: its window, block, group and split. Deterministic for a seed. ``per_source``:
    ``{source: {tile_size, overlap, block_size, stratify}}`` overriding the defaults for that source."""
    infos = {it.path: raster_info_cached(it.path) for it in items}
    rows = []
    by_source: dict[str, list[Item]] = {}
    for it in items:
        by_source.setdefault(it.source, []).append(it)
    for source, its in sorted(by_source.items()):
        tile_s = source_setting(source, "tile_size", tile_size, per_source)
        overlap_s = source_setting(source, "overlap", overlap, per_source)
        block_s = source_setting(source, "block_size", block_size, per_source)
        groups: dict[str, list[Item]] = {}
        for it in its:
            groups.setdefault(it.group, []).append(it)
        published = {g: m[0].published_split for g, m in groups.items() if m[0].published_split}
        whole = len(groups) >= MANY_GROUPS or len(published) == len(groups)
        # fractional block grid per group, from its first image
        grid = {}
        for g, members in groups.items():
            ref = infos[members[0].path]
            nr = 1 if whole else max(1, round(ref.height / block_s))
            nc = 1 if whole else max(1, round(ref.width / block_s))
            grid[g] = (nr, nc)
        units = [f"{g}#{r}.{c}" for g, (nr, nc) in grid.items() for r in range(nr) for c in range(nc) if g not in published]
        seed_s = seed + sum(map(ord, source))  # per-source stream, stable across runs and Python versions
        scores = None
        if source_setting(source, "stratify", False, per_source) and units:
            scores = {}
            for g, (nr, nc) in grid.items():
                labelled = [it for it in groups[g] if it.mask is not None]
                if g in published or not labelled:
                    continue
                info = infos[labelled[0].path]
                re_, ce_ = _edges(info.height, nr), _edges(info.width, nc)
                for r in range(nr):
                    for c in range(nc):
                        bounds = (int(re_[r]), int(ce_[c]), int(re_[r + 1]), int(ce_[c + 1]))
                        scores[f"{g}#{r}.{c}"] = block_positive_share(labelled[0], bounds)
            if len(scores) != len(units):
                raise ValueError(f"stratify: source {source} has blocks without a label mask")
        assignment = allocate(units, fractions, seed_s, scores)
        for g, members in groups.items():
            nr, nc = grid[g]
            for it in members:
                info = infos[it.path]
                re_, ce_ = _edges(info.height, nr), _edges(info.width, nc)
                for r in range(nr):
                    for c in range(nc):
                        unit = f"{g}#{r}.{c}"
                        split = published.get(g) or assignment[unit]
                        bounds = (int(re_[r]), int(ce_[c]), int(re_[r + 1]), int(ce_[c + 1]))
                        for t in tile_grid(info.height, info.width, tile_s, overlap_s, bounds=bounds):
                            w = t.window
                            rows.append((source, it.path, it.product, g, unit, split,
                                         int(w.row_off), int(w.col_off), int(w.height), int(w.width)))
    return pd.DataFrame(rows, columns=SPLIT_COLUMNS)


def raster_info_cached(rel_path: str):
    """Metadata of ``data/<rel_path>``, read once per absolute path (the project root may change, e.g. in tests)."""
    from vhrfm.config import data_dir

    return _raster_info_abs(str(data_dir() / rel_path))


@lru_cache(maxsize=None)
def _raster_info_abs(path: str):
    return raster_info(path)


def check_disjoint(df: pd.DataFrame) -> list[str]:
    """Problems found: tiles of different splits that overlap, or a block / group spread over splits."""
    problems = []
    for unit, g in df.groupby(["source", "block"]):
        if g.split.nunique() > 1:
            problems.append(f"block {unit} in splits {sorted(g.split.unique())}")
    published_groups = df.groupby(["source", "group"]).block.nunique()
    for (source, group), nblocks in published_groups.items():
        if nblocks == 1:
            splits = df[(df.source == source) & (df.group == group)].split.unique()
            if len(splits) > 1:
                problems.append(f"group {source}/{group} in splits {sorted(splits)}")
    for path, g in df.groupby("path"):
        if g.split.nunique() < 2:
            continue
        r0, c0 = g.row_off.to_numpy(), g.col_off.to_numpy()
        r1, c1 = r0 + g.height.to_numpy(), c0 + g.width.to_numpy()
        s = g.split.to_numpy()
        for i in range(len(g)):
            ov = (r0[i] < r1) & (r0 < r1[i]) & (c0[i] < c1) & (c0 < c1[i]) & (s != s[i])
            if ov.any():
                problems.append(f"{path}: tile at ({r0[i]},{c0[i]}) ({s[i]}) overlaps another split")
                break
    return problems
