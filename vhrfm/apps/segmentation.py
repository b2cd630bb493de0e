"""Binary segmentation with few labels: tiles from the split table, nested label budgets, training,
pixel metrics with bootstrap CIs, and the operating threshold chosen on validation.

Sensor-agnostic: any source whose items carry a ``mask`` (and optionally an ``ignore`` raster) plugs in.
Mask convention: 1 = positive (burned), 0 = negative, 255 = ignore (clouds, smoke, padding, nodata).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vhrfm.data.datasets import IGNORE, SourceDataset


@dataclass
class SegTiles:
    X: np.ndarray           # (N, C, T, T) float32, normalised
    Y: np.ndarray           # (N, T, T) uint8: 0 / 1 / 255
    rows: pd.DataFrame      # the split-table rows, same order
    wavelengths: np.ndarray
    widths: np.ndarray
    gsd: float
    sensor: str

    def subset(self, idx) -> SegTiles:
        idx = np.asarray(idx, int)
        return SegTiles(self.X[idx], self.Y[idx], self.rows.iloc[idx].reset_index(drop=True), self.wavelengths,
                        self.widths, self.gsd, self.sensor)

    def split(self, name: str) -> SegTiles:
        return self.subset(np.flatnonzero(self.rows.split.to_numpy() == name))

    def __len__(self) -> int:
        return len(self.X)


def load_seg_tiles(sources, splits: pd.DataFrame, stats: dict, tile_size: int, min_labelled: float = 0.2,
                   progress: bool = True) -> SegTiles:
    """Every tile of ``sources`` (one band set) with its mask; tiles with < ``min_labelled`` labelled pixels dropped."""
    ds = SourceDataset(sources, splits, stats=stats, tile_size=tile_size)
    X, Y, keep = [], [], []
    meta = None
    for i in tqdm(range(len(ds)), desc="segmentation tiles", disable=not progress):
        s = ds[i]
        if "mask" not in s:
            raise ValueError(f"{s['source']} has no mask: not a segmentation source")
        m = s["mask"].astype(np.uint8)
        if (m != IGNORE).mean() < min_labelled:
            continue
        if meta is None:
            meta = s
        elif len(s["wavelengths"]) != len(meta["wavelengths"]) or not np.allclose(s["wavelengths"], meta["wavelengths"]):
            raise ValueError("segmentation tiles must share one band set")
        X.append(s["image"])
        Y.append(m)
        keep.append(i)
    return SegTiles(np.stack(X), np.stack(Y), ds.table.iloc[keep].reset_index(drop=True), meta["wavelengths"],
                    meta["widths"], float(meta["gsd"]), meta["sensor"])


@dataclass
class AppTask:
    """What an application chapter trains and scores, as one profile defines it: its settings, the training,
    validation and test splits, the nested label budgets and the pretrained teacher. Each task adds its own data
    (:class:`vhrfm.apps.wildfire.WildfireTask`, :class:`vhrfm.apps.megafauna.MegafaunaTask`)."""

    cfg: dict               # the profile's settings of the task
    seed: int
    train: object           # the task's image or tile set (SegTiles, DetImages)
    val: object
    test: object
    budgets: dict           # budget name -> indices into ``train`` (nested, seeded)
    stats: dict             # normalisation statistics of the data stage
    teacher: Path           # the pretrained teacher's weights (a profile output)


def label_budgets(n_train: int, fractions: dict[str, float], seed: int,
                  masks: np.ndarray | None = None, min_share: float = 0.05) -> dict[str, list[int]]:
    """Nested subsets of training-tile indices: each budget's tiles include every smaller budget's (seeded).

    With ``masks`` (N, H, W; 1 / 0 / 255 ignore) the first tile of the seeded order is the first one that holds
    both classes, each on at least ``min_share`` of its labelled pixels, so that every budget, even one tile,
    shows the model both classes (as an analyst labelling one tile would pick one across the fire's edge); the
    rest of the order is unchanged. Without such a tile the plain seeded order is kept."""
    order = np.random.default_rng(seed).permutation(n_train)
    if masks is not None:
        if len(masks) != n_train:
            raise ValueError(f"masks: {len(masks)} tiles for n_train={n_train}")
        for pos, i in enumerate(order):
            lab = masks[i] != IGNORE
            share = float((masks[i][lab] == 1).mean()) if lab.any() else 0.0
            if min_share <= share <= 1.0 - min_share:
                order = np.concatenate([[i], np.delete(order, pos)])
                break
    out = {}
    for name, frac in sorted(fractions.items(), key=lambda kv: kv[1]):
        k = max(1, int(round(frac * n_train)))
        out[name] = sorted(order[:k].tolist())
    return out


def block_folds(tiles: SegTiles, k: int, seed: int, stratify: bool = True) -> np.ndarray:
    """Spatial k-fold cross-validation: the fold (0 .. k-1) of every tile, whole blocks to one fold (tiles never
    cross blocks, so the folds are as spatially disjoint as the train / val / test splits are). With ``stratify``
    the blocks are ranked by their positive share (positive over labelled pixels, summed over the block's tiles)
    and each run of ``k`` consecutive blocks is dealt the ``k`` folds in a seeded order, so that every fold spans
    the range of burned shares, as the data stage's stratified val / test draw does; otherwise a seeded shuffle
    dealt round-robin. Fold sizes differ by at most one block."""
    blocks = tiles.rows.block.astype(str).to_numpy()
    names = np.unique(blocks)
    if not 2 <= k <= len(names):
        raise ValueError(f"block_folds: k={k} folds need 2 <= k <= {len(names)} (the tiles' blocks)")
    rng = np.random.default_rng(seed)
    if stratify:
        lab = tiles.Y != IGNORE
        pos = (tiles.Y == 1).reshape(len(tiles), -1).sum(1)
        n = lab.reshape(len(tiles), -1).sum(1)
        share = {b: pos[blocks == b].sum() / max(1, n[blocks == b].sum()) for b in names}
        order = sorted(names, key=lambda b: (share[b], b))
        fold_of = {}
        for i in range(0, len(order), k):
            run = order[i:i + k]
            for b, f in zip(run, rng.permutation(k)[:len(run)]):
                fold_of[b] = int(f)
    else:
        fold_of = {b: i % k for i, b in enumerate(rng.permutation(names))}
    return np.array([fold_of[b] for b in blocks], int)


# ----------------------------------------------------------------------------------------------- metrics


def confusion(prob: np.ndarray, y: np.ndarray, thr: float) -> np.ndarray:
    """Per-tile (tp, fp, fn, tn) over labelled pixels: (N, 4)."""
    lab = y != IGNORE
    pred = prob >= thr
    pos = y == 1
    axes = tuple(range(1, y.ndim))
    return np.stack([(pred & pos & lab).sum(axes), (pred & ~pos & lab).sum(axes), (~pred & pos & lab).sum(axes),
                     (~pred & ~pos & lab).sum(axes)], axis=1).astype(np.int64)


def scores_from_confusion(c: np.ndarray) -> dict:
    tp, fp, fn, _ = c.sum(0) if c.ndim == 2 else c
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return {"precision": float(p), "recall": float(r), "f1": float(f1), "iou": float(iou)}


def seg_metrics(prob, y, thr: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """Precision, recall, F1, IoU of the positive class, with bootstrap 95 % CIs over tiles."""
    c = confusion(prob, y, thr)
    out = scores_from_confusion(c)
    rng = np.random.default_rng(seed)
    boots = [scores_from_confusion(c[rng.integers(0, len(c), len(c))]) for _ in range(n_boot)]
    for k in ("precision", "recall", "f1", "iou"):
        if boots:
            vals = np.array([b[k] for b in boots])
            out[f"{k}_ci95"] = [float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))]
    out["threshold"] = float(thr)
    out["n_tiles"] = int(len(c))
    return out


def pr_curve(prob, y, n: int = 101) -> pd.DataFrame:
    """Precision and recall of ``prob >= threshold`` over labelled pixels, at ``n`` quantile thresholds."""
    lab = y != IGNORE
    p, t = prob[lab].ravel(), (y[lab] == 1).ravel()
    if p.size == 0:
        return pd.DataFrame({"threshold": [0.5], "precision": [1.0], "recall": [0.0]})
    thresholds = np.unique(np.quantile(p, np.linspace(0, 1, n)))
    pos, neg = np.sort(p[t]), np.sort(p[~t])
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall = tp / pos.size if pos.size else np.zeros_like(thresholds)
    return pd.DataFrame({"threshold": thresholds, "precision": precision, "recall": recall})


def choose_threshold(prob, y, min_precision: float = 0.0) -> float:
    """On validation: the threshold with the best F1 among those whose precision reaches ``min_precision``
    (the best F1 overall when none does; ``min_precision = 0`` is plain best F1)."""
    curve = pr_curve(prob, y, 201)
    curve["f1"] = (2 * curve.precision * curve.recall / (curve.precision + curve.recall).replace(0, np.nan)).fillna(0)
    ok = curve[curve.precision >= min_precision]
    pick = (ok if len(ok) and ok.f1.max() > 0 else curve).sort_values("f1", ascending=False).iloc[0]
    return float(pick.threshold)


def lowest_threshold_reaching(curve: pd.DataFrame, target: float) -> float | None:
    """The lowest threshold (most recall) of a precision-recall curve (columns ``threshold``, ``precision``,
    ``recall``) whose precision reaches ``target`` with some recall; None when none does (no fall-back). The one
    rule of both applications' precision-target points (segmentation here, detection in
    :func:`vhrfm.apps.megafauna.precision_target_threshold`)."""
    ok = curve[(curve.precision >= target) & (curve.recall > 0)] if len(curve) else curve
    return float(ok.threshold.min()) if len(ok) else None


def precision_target_threshold(prob, y, target: float) -> float | None:
    """On validation: the lowest threshold (most recall) among the 201 candidates of :func:`choose_threshold` whose
    precision reaches ``target`` with some recall (:func:`lowest_threshold_reaching`); None when none does. Unlike
    :func:`choose_threshold` there is no fall-back: the point answers "what share of the burned area does this model
    keep at that precision"."""
    return lowest_threshold_reaching(pr_curve(prob, y, 201), target)


def at_precision_target(prob_val, y_val, prob_test, y_test, target: float) -> dict:
    """Precision, recall, F1 and IoU on test at the threshold :func:`precision_target_threshold` chooses on
    validation; the same keys, None-valued, when validation never reaches ``target``."""
    thr = precision_target_threshold(prob_val, y_val, target)
    if thr is None:
        return {"target": target, "threshold": None, "reached_on_val": False,
                **dict.fromkeys(("precision", "recall", "f1", "iou"))}
    return {"target": target, "threshold": thr, "reached_on_val": True,
            **scores_from_confusion(confusion(prob_test, y_test, thr))}


# ----------------------------------------------------------------------------------------------- training


def random_d4(rng: np.random.Generator, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same random element of the dihedral group D4 (rotation by k x 90 degrees, optional flip) on each tensor's
    last two axes."""
    k = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    return tuple(d4_apply(t, k, flip) for t in tensors)


def optimiser_with_encoder_scale(model, lr: float, weight_decay: float, encoder_lr_scale: float, steps: int):
    """AdamW with the encoder's parameters at ``lr * encoder_lr_scale`` (frozen ones left out), and a one-cycle schedule."""
    enc = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder.")]
    other = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    groups = [{"params": other, "lr": lr}] + ([{"params": enc, "lr": lr * encoder_lr_scale}] if enc else [])
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1)
    return opt, sched


def train_segmenter(model, tiles: SegTiles, *, steps: int, batch_size: int, lr: float, crop: int, seed: int,
                    weight_decay: float = 1e-4, encoder_lr_scale: float = 1.0, kd_teacher=None,
                    kd_pool: SegTiles | None = None, kd_weight: float = 1.0, dice_weight: float = 0.0,
                    progress: bool = True, desc: str = "train"):
    """Binary cross-entropy on labelled pixels (plus ``dice_weight`` x the soft Dice loss of
    segmentation-models-pytorch on the same pixels, the batch as one set), random crops with D4 flips; returns the
    loss history.

    With ``kd_teacher`` (task-specific KD, :mod:`vhrfm.distill.task`): each step also draws a batch from
    ``kd_pool`` (every training tile, labelled or not; its labels are not read) and adds ``kd_weight`` x the
    pixel-wise KL between the teacher's and the model's probabilities."""
    from vhrfm.distill.task import bernoulli_kd_loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt, sched = optimiser_with_encoder_scale(model, lr, weight_decay, encoder_lr_scale, steps)
    n, t = len(tiles), tiles.X.shape[-1]
    crop = min(crop, t)
    wl, wd = torch.from_numpy(tiles.wavelengths), torch.from_numpy(tiles.widths)
    gsd = torch.full((batch_size,), tiles.gsd)
    if kd_teacher is not None:
        kd_pool = tiles if kd_pool is None else kd_pool
        kd_teacher.eval()
    dice = None
    if dice_weight > 0:
        import segmentation_models_pytorch as smp

        dice = smp.losses.DiceLoss("binary", from_logits=True)
    history = []
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        idx = rng.integers(0, n, batch_size)
        r, c = rng.integers(0, t - crop + 1, 2)
        x = torch.from_numpy(tiles.X[idx, :, r:r + crop, c:c + crop])
        y = torch.from_numpy(tiles.Y[idx, r:r + crop, c:c + crop].astype(np.int64))
        x, y = random_d4(rng, x, y)
        logits = model(x.contiguous(), wl, gsd, wd)[:, 0]
        lab = y != IGNORE
        target = (y[lab] == 1).float()
        loss = F.binary_cross_entropy_with_logits(logits[lab], target) if lab.any() else logits.sum() * 0.0
        if dice is not None and lab.any():
            loss = loss + dice_weight * dice(logits[lab].view(1, 1, -1), target.view(1, 1, -1))
        if kd_teacher is not None:
            kx = torch.from_numpy(kd_pool.X[rng.integers(0, len(kd_pool), batch_size), :, r:r + crop, c:c + crop])
            (kx,) = random_d4(rng, kx)
            kx = kx.contiguous()
            with torch.no_grad():
                tl = kd_teacher(kx, wl, gsd, wd)[:, 0]
            loss = loss + kd_weight * bernoulli_kd_loss(model(kx, wl, gsd, wd)[:, 0], tl)
        elif not lab.any():
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    model.eval()
    return history


D4 = tuple((k, flip) for flip in (False, True) for k in range(4))  # the 8 elements: rotation k x 90 degrees, then flip


def d4_apply(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Element (k, flip) of D4 on the last two axes, as :func:`random_d4` applies it: rotate, then flip."""
    t = torch.rot90(t, k, (-2, -1))
    return t.flip(-1) if flip else t


def d4_invert(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """The inverse of :func:`d4_apply` (unflip, then rotate back)."""
    return torch.rot90(t.flip(-1) if flip else t, -k, (-2, -1))


def d4_mean(predict, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation over D4: the mean of ``predict`` (a batch (N, C, H, W) -> per-pixel maps (N, H, W))
    on the 8 rotations and flips of ``x``, each map turned back (nadir imagery has no up; 8x the inference)."""
    acc = None
    for k, flip in D4:
        p = d4_invert(predict(d4_apply(x, k, flip).contiguous()), k, flip)
        acc = p.clone() if acc is None else acc + p
    return acc / len(D4)


def positive_probs(net, x: torch.Tensor, wavelengths: torch.Tensor, gsd: torch.Tensor, widths: torch.Tensor,
                   tta: bool = False) -> torch.Tensor:
    """The positive-class probability map (N, H, W) of a dense any-band network (the sigmoid of its first output
    channel) on the batch ``x`` with its band metadata; with ``tta``, the :func:`d4_mean` of it (8x the inference).
    What wildfire's :func:`predict_probs`, megafauna's ``predict_heat`` and a loaded task model all run."""
    def predict(v):
        return torch.sigmoid(net(v, wavelengths, gsd, widths)[:, 0])
    return d4_mean(predict, x) if tta else predict(x)


@torch.no_grad()
def predict_probs(model, tiles: SegTiles, batch_size: int = 16, tta: bool = False) -> np.ndarray:
    """The burned-class probability of every pixel of ``tiles``. With ``tta``: D4 test-time augmentation, the mean
    of the probabilities over the 8 rotations and flips of each tile, each mapped back (nadir imagery has no up;
    8x the inference)."""
    model.eval()
    wl, wd = torch.from_numpy(tiles.wavelengths), torch.from_numpy(tiles.widths)
    out = []
    for i in range(0, len(tiles), batch_size):
        x = torch.from_numpy(tiles.X[i:i + batch_size])
        out.append(positive_probs(model, x, wl, torch.full((len(x),), tiles.gsd), wd, tta).numpy())
    return np.concatenate(out).astype(np.float32)
