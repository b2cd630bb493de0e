"""Frozen-feature evaluation: real labelled VHR probe tasks, k-NN and linear probes, and baselines.

Tasks (patches from the stored split table, so train / val / test stay spatially disjoint):

* ``aircraft`` — Pleiades RGB airports at 1 m (0.5 m tiles averaged 2x2): a patch centred near an
  aircraft (present) or containing no part of one (absent);
* ``seals`` — drone RGB tiles degraded to 0.3 m, satellite GSD (area-average, i.e. box-filter
  anti-aliased, decimation by 12 from the ~2.5 cm drone GSD): a window holding a seal (present) or no seal;
* ``burned`` — Sentinel-2 10 m render, EMSR382: burned (>= 50 % of clear pixels) or unburned (<= 5 %),
  clouds and smoke excluded; an out-of-resolution check, not VHR.

Probes: k-NN (cosine, k=20) and logistic regression on standardised features with C chosen on val;
test accuracy with a bootstrap 95 % CI. An encoder offers two feature sets, chosen per task on validation
like C: ``pooled`` (the final feature map, average-pooled: the encoder's ``forward``) and ``multilevel``
(mean- and standard-deviation-pooled maps of every stage of the encoder's feature pyramid, concatenated, as
in layer-wise linear evaluation, e.g. Goyal et al., ICCV 2019; for the ViT, one level: its patch tokens). Baselines in the same run: the same encoder randomly
initialised, random convolutional features (torchgeo's RCF) and simple pixel statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vhrfm.config import data_dir
from vhrfm.data.io import open_raster, read_window
from vhrfm.data.normalize import Normalizer, stats_key
from vhrfm.data.splits import raster_info_cached
from vhrfm.data.sources import SEAL_DEGRADE, SEAL_GSD_M, get_source
from vhrfm.metrics import accuracy_with_ci
from vhrfm.sensors import get_sensor



@dataclass
class ProbeTask:
    name: str
    sensor: str
    X: np.ndarray            # (N, C, P, P) float32, normalised
    y: np.ndarray            # (N,) int
    split: np.ndarray        # (N,) str
    wavelengths: np.ndarray
    widths: np.ndarray
    gsd: float
    description: str

    @property
    def usable(self) -> bool:
        """Both classes present in train, val and test."""
        return all(len(set(self.y[self.split == s])) == 2 for s in ("train", "val", "test"))

    def counts(self) -> dict:
        return {s: {"n": int((self.split == s).sum()), "positive": int(self.y[self.split == s].sum())} for s in ("train", "val", "test")}


def _touches(boxes: np.ndarray, r0: int, c0: int, size: int) -> np.ndarray:
    """Which xyxy boxes overlap the square window of side ``size`` at (r0, c0)."""
    return (boxes[:, 0] < c0 + size) & (boxes[:, 2] > c0) & (boxes[:, 1] < r0 + size) & (boxes[:, 3] > r0)


def _balance(rows: list, rng, cap: int | None):
    """Keep as many absent as present per split (and at most ``cap`` per class and split)."""
    df = pd.DataFrame(rows, columns=["split", "y", "ref"])
    keep = []
    for s, g in df.groupby("split"):
        n = min((g.y == 1).sum(), (g.y == 0).sum())
        if cap is not None:
            n = min(n, cap)
        for cls in (0, 1):
            idx = g.index[g.y == cls].to_numpy()
            keep.extend(rng.choice(idx, n, replace=False).tolist())
    return [rows[i] for i in sorted(keep)]


def _read_all(refs, size: int, norm, out_size: int, factor: int) -> np.ndarray:
    """Read square windows (path, row, col) of side ``size``, one open per file, normalise and down-sample."""
    out = np.empty((len(refs), len(norm.mean), out_size, out_size), np.float32)
    by_path: dict[str, list[int]] = {}
    for i, (path, _, _) in enumerate(refs):
        by_path.setdefault(path, []).append(i)
    for path, idx in by_path.items():
        with open_raster(data_dir() / path) as src:
            for i in sorted(idx, key=lambda k: refs[k]):
                _, r0, c0 = refs[i]
                data, _ = read_window(src, Window(c0, r0, size, size))
                x = torch.from_numpy(norm(data))[None]
                if factor > 1:
                    x = F.avg_pool2d(x, factor)
                if x.shape[-1] != out_size:
                    x = F.interpolate(x, size=(out_size, out_size), mode="area")
                out[i] = x[0].numpy()
    return out


def _finish(name: str, sensor_id: str, bands: tuple[str, ...], rows: list, rng, cap, size: int, norm, patch: int,
            factor: int, gsd: float, description: str) -> ProbeTask:
    """Balance the (split, label, window) rows, read their pixels and wrap them as a task."""
    rows = _balance(rows, rng, cap)
    X = _read_all([ref for _, _, ref in rows], size, norm, patch, factor)
    sensor = get_sensor(sensor_id)
    return ProbeTask(name, sensor.id, X.astype(np.float32), np.array([y for _, y, _ in rows]),
                     np.array([s for s, _, _ in rows]), np.asarray(sensor.wavelengths(bands), np.float32),
                     np.asarray(sensor.widths(bands), np.float32), gsd, description)


def aircraft_task(splits: pd.DataFrame, stats: dict, patch: int = 64, cap: int | None = None, seed: int = 0) -> ProbeTask:
    src = "airbus_pleiades_aircraft"
    rng = np.random.default_rng(seed)
    norm = Normalizer.from_stats(stats[stats_key(src, "rgb")])
    items = {it.path: it for it in get_source(src).items()}
    win = 2 * patch  # read at 0.5 m, average 2x2 -> 1 m
    rows = []
    for r in splits[splits.source == src].itertuples():
        if r.height < win or r.width < win:
            continue
        b = items[r.path].boxes
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        # present: an aircraft centre in the tile's central area; the window is centred on it (clipped to the tile)
        inner = (cx >= r.col_off + win // 4) & (cx < r.col_off + r.width - win // 4) & (cy >= r.row_off + win // 4) & (cy < r.row_off + r.height - win // 4)
        for k in np.flatnonzero(inner)[:1]:
            c0 = int(np.clip(cx[k] - win // 2, r.col_off, r.col_off + r.width - win))
            r0 = int(np.clip(cy[k] - win // 2, r.row_off, r.row_off + r.height - win))
            rows.append((r.split, 1, (r.path, r0, c0)))
        r0 = int(rng.integers(r.row_off, r.row_off + r.height - win + 1))
        c0 = int(rng.integers(r.col_off, r.col_off + r.width - win + 1))
        if not _touches(b, r0, c0, win).any():
            rows.append((r.split, 0, (r.path, r0, c0)))
    return _finish("aircraft", "pleiades", ("red", "green", "blue"), rows, rng, cap, win, norm, patch, 2, 1.0,
                   f"Pleiades RGB, {patch} px at 1 m: aircraft present / absent")


def seals_task(splits: pd.DataFrame, stats: dict, patch: int = 32, cap: int | None = None, seed: int = 0) -> ProbeTask:
    src = "seals_aerial_drone"
    rng = np.random.default_rng(seed)
    norm = Normalizer.from_stats(stats[stats_key(src, "rgb")])
    win = patch * SEAL_DEGRADE
    split_of = splits[splits.source == src].groupby("path").split.first()
    rows = []
    for it in get_source(src).items():
        if it.path not in split_of.index:
            continue
        info = raster_info_cached(it.path)
        if info.height < win or info.width < win:
            continue
        b = it.boxes
        for r0 in (0, info.height - win):
            for c0 in (0, info.width - win):
                inter = _touches(b, r0, c0, win)
                cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                centre_in = (cx >= c0) & (cx < c0 + win) & (cy >= r0) & (cy < r0 + win)
                if centre_in.any():
                    rows.append((split_of[it.path], 1, (it.path, r0, c0)))
                elif not inter.any():
                    rows.append((split_of[it.path], 0, (it.path, r0, c0)))
    return _finish("seals", "aerial_rgb", ("red", "green", "blue"), rows, rng, cap, win, norm, patch, SEAL_DEGRADE,
                   round(SEAL_GSD_M * SEAL_DEGRADE, 4), f"drone RGB degraded x{SEAL_DEGRADE} to 0.3 m, {patch} px: seal present / absent")


def burned_task(splits: pd.DataFrame, stats: dict, patch: int = 32, cap: int | None = None, seed: int = 0) -> ProbeTask:
    src = "cems_emsr382_sentinel2"
    rng = np.random.default_rng(seed)
    norm = Normalizer.from_stats(stats[stats_key(src, "rgb")])
    items = {it.path: it for it in get_source(src).items()}
    rows, seen = [], set()
    for r in splits[splits.source == src].itertuples():
        it = items[r.path]
        with open_raster(data_dir() / it.mask) as m, open_raster(data_dir() / it.ignore) as ig:
            w = Window(r.col_off, r.row_off, r.width, r.height)
            mask, ign = m.read(1, window=w), ig.read(1, window=w)
        for i in range(0, r.height - patch + 1, patch):
            for j in range(0, r.width - patch + 1, patch):
                key = (r.path, r.row_off + i, r.col_off + j)
                if key in seen:
                    continue
                seen.add(key)
                clear = ign[i:i + patch, j:j + patch] == 0
                if clear.mean() < 0.8:
                    continue
                frac = (mask[i:i + patch, j:j + patch][clear] == 1).mean()
                if frac >= 0.5:
                    rows.append((r.split, 1, key))
                elif frac <= 0.05:
                    rows.append((r.split, 0, key))
    return _finish("burned", "sentinel2", ("b04", "b03", "b02"), rows, rng, cap, patch, norm, patch, 1, 10.0,
                   f"Sentinel-2 RGB render at 10 m, {patch} px: burned / unburned (clouds excluded)")


TASKS = {"aircraft": aircraft_task, "seals": seals_task, "burned": burned_task}


# ----------------------------------------------------------------------------------------------- features


FEATURE_SETS = ("pooled", "multilevel")


def _pyramid_stats(encoder, x: torch.Tensor, task: ProbeTask) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(mean, std, map side) of every level of the encoder's feature pyramid on the batch ``x``, fine to coarse."""
    from vhrfm.heads import feature_pyramid

    maps = feature_pyramid(encoder, x, task.wavelengths, torch.full((len(x),), task.gsd), task.widths)
    return [(f.mean((2, 3)), f.std((2, 3), correction=0), int(f.shape[-1])) for f in maps]


@torch.no_grad()
def encoder_features(encoder, task: ProbeTask, batch_size: int = 128, features: str = "pooled") -> np.ndarray:
    """(N, D) frozen features of ``task``'s patches: ``pooled`` or ``multilevel`` (see the module docstring)."""
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {features!r}; expected one of {FEATURE_SETS}")
    encoder.eval()
    out = []
    for i in range(0, len(task.X), batch_size):
        x = torch.from_numpy(task.X[i:i + batch_size])
        if features == "pooled":
            out.append(encoder(x, task.wavelengths, torch.full((len(x),), task.gsd), task.widths).float().numpy())
        else:
            stats = _pyramid_stats(encoder, x, task)
            parts = [m for m, _, _ in stats] + [s for _, s, _ in stats]
            out.append(torch.cat(parts, 1).float().numpy())
    return np.concatenate(out)


@torch.no_grad()
def level_features(encoder, task: ProbeTask, batch_size: int = 128) -> list[tuple[np.ndarray, int]]:
    """Each level of the ``multilevel`` set on its own: [((N, 2 C_l) mean- and std-pooled map of level l, its stride
    in input pixels)], fine to coarse. Probing them one at a time says which depth of the encoder a task's accuracy
    comes from (for a ResNet: the stem at stride 2, then its four stages)."""
    encoder.eval()
    parts = None
    for i in range(0, len(task.X), batch_size):
        stats = _pyramid_stats(encoder, torch.from_numpy(task.X[i:i + batch_size]), task)
        got = [torch.cat([m, s], 1).float().numpy() for m, s, _ in stats]
        parts = [[g] for g in got] if parts is None else [p + [g] for p, g in zip(parts, got)]
    info = getattr(getattr(encoder, "body", None), "feature_info", None)
    if info is not None:  # a timm network knows its levels' strides (a map of 1 x 1 does not say it)
        strides = [int(f["reduction"]) for f in info]
    else:  # the ViT: one level, its patch grid
        strides = [max(1, task.X.shape[-1] // side) for _, _, side in stats]
    return [(np.concatenate(p), st) for p, st in zip(parts, strides)]


@torch.no_grad()
def rcf_features(task: ProbeTask, features: int = 512, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """Random convolutional features (Rolf et al., Nat. Commun. 2021) via torchgeo's RCF, Gaussian kernels."""
    from torchgeo.models import RCF

    torch.manual_seed(seed)
    model = RCF(in_channels=task.X.shape[1], features=features, kernel_size=3, bias=-1.0, seed=seed, mode="gaussian")
    model.eval()
    return np.concatenate([model(torch.from_numpy(task.X[i:i + batch_size])).numpy() for i in range(0, len(task.X), batch_size)])


def pixel_stat_features(task: ProbeTask) -> np.ndarray:
    """Per band: mean, std, 10th/90th percentiles and mean gradient magnitude."""
    x = task.X.astype(np.float64)
    flat = x.reshape(*x.shape[:2], -1)
    gy, gx = np.gradient(x, axis=(2, 3))
    grad = np.sqrt(gx**2 + gy**2).reshape(*x.shape[:2], -1).mean(-1)
    feats = [flat.mean(-1), flat.std(-1), np.percentile(flat, 10, axis=-1), np.percentile(flat, 90, axis=-1), grad]
    return np.concatenate(feats, axis=1).astype(np.float32)


def effective_rank(feats: np.ndarray) -> float:
    """Effective rank of a feature matrix (N x D): ``exp`` of the entropy of its normalised singular values, after
    centring (RankMe, Garrido et al., ICML 2023, on the covariance spectrum as in Jing et al., "Understanding
    Dimensional Collapse in Contrastive Self-supervised Learning", ICLR 2022). 1 when every sample lies on one line,
    min(N - 1, D) when the centred features spread evenly over every direction; a drop during pretraining is
    dimensional collapse."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"effective_rank needs an (N >= 2, D) matrix, got shape {f.shape}")
    s = np.linalg.svd(f - f.mean(0), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


# ----------------------------------------------------------------------------------------------- probes


def knn_predict(train_f, train_y, test_f, k: int = 20) -> np.ndarray:
    a = train_f / (np.linalg.norm(train_f, axis=1, keepdims=True) + 1e-8)
    b = test_f / (np.linalg.norm(test_f, axis=1, keepdims=True) + 1e-8)
    sims = b @ a.T
    k = min(k, len(train_y))
    nn_idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    votes = train_y[nn_idx]
    weights = np.exp(np.take_along_axis(sims, nn_idx, axis=1) / 0.07)
    score1 = (weights * (votes == 1)).sum(1)
    score0 = (weights * (votes == 0)).sum(1)
    return (score1 > score0).astype(int)


def linear_probe(train_f, train_y, val_f, val_y, seed: int = 0, cs=(0.01, 0.1, 1.0, 10.0)):
    """Logistic regression on standardised features; C chosen on val. Returns (fitted scaler, model, C)."""
    scaler = StandardScaler().fit(train_f)
    best = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(train_f), train_y)
        acc = (clf.predict(scaler.transform(val_f)) == val_y).mean()
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    return scaler, best[2], best[1]


def evaluate_features(feats: np.ndarray, task: ProbeTask, seed: int = 0, n_boot: int = 1000) -> dict:
    tr, va, te = (task.split == s for s in ("train", "val", "test"))
    knn_val = knn_predict(feats[tr], task.y[tr], feats[va])
    knn_test = knn_predict(feats[tr], task.y[tr], feats[te])
    scaler, clf, c = linear_probe(feats[tr], task.y[tr], feats[va], task.y[va], seed)
    lin_val = clf.predict(scaler.transform(feats[va]))
    lin_test = clf.predict(scaler.transform(feats[te]))
    knn = accuracy_with_ci(task.y[te], knn_test, n_boot, seed)
    lin = accuracy_with_ci(task.y[te], lin_test, n_boot, seed)
    return {"knn_acc": knn["acc"], "knn_ci95": knn["ci95"], "linear_acc": lin["acc"], "ci95": lin["ci95"],
            "linear_val_acc": float((lin_val == task.y[va]).mean()), "knn_val_acc": float((knn_val == task.y[va]).mean()),
            "linear_C": c, "n_test": lin["n"], "effective_rank": effective_rank(feats[tr]), "dim": int(feats.shape[1])}
