"""Marine megafauna detection as points: a centre heat-map on any encoder, decoded by peak finding, scored by
matching predictions to labelled animals within a radius in metres.

Data. The main training data are drone photographs of seals (``seals_aerial_drone``, ~2.5 cm, estimated)
degraded to satellite GSD by area averaging over ``SEAL_DEGRADE`` x ``SEAL_DEGRADE`` pixels (an anti-aliased
decimation to 0.3 m, the WorldView-3 PAN GSD); their published train / valid / test split (parent-photo
disjoint) is kept, and the degraded test split is the larger test set. The real satellite target is the
WorldView-3 beluga chips (``beluga_seeker_wv3``, PAN, 0.3 m): never trained or tuned on here, they are the
cross-domain test (aerial-degraded -> satellite). "Uncertain whale" boxes are ignored: a detection on one
is neither a true nor a false positive.

Models (same images, splits and label budgets): a classical difference-of-Gaussians blob detector, a U-Net
from scratch, the pretrained teacher with a light dense head, frozen and fine-tuned, the teacher fine-tuned under the
U-Net's decoder (``teacher_unet``) and that architecture from random weights (``anyband_unet_scratch``), and a
compact student with the light head: from scratch, fine-tuned from its self-supervised KD weights, and fine-tuned
with task-specific KD from the teacher's heat-maps (:mod:`vhrfm.distill.task`); ``params.yaml`` names which of them
a profile runs. Every learned detector is trained by :func:`fit_detector` and every detector scored by
:func:`score_val_test` (threshold chosen on validation, metrics on test).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from vhrfm.apps.segmentation import AppTask, label_budgets, lowest_threshold_reaching, positive_probs
from vhrfm.apps.taskmodel import deployment_picks
from vhrfm.config import data_dir, load_profile, models_dir, results_dir
from vhrfm.data.io import open_raster
from vhrfm.data.normalize import Normalizer, load_stats, stats_key
from vhrfm.data.sources import SEAL_DEGRADE, SEAL_GSD_M, get_source, sensor_of
from vhrfm.errors import VHRFMInputError
from vhrfm.distill.task import check_model_order, distillation_block, kd_kwargs, student_spec
from vhrfm.heads import DENSE_MODELS, STUDENT_MODELS, TEACHER_MODELS, build_dense_model, encoder_lr_scale, train_steps

MODELS = ("classical", *DENSE_MODELS)  # every model a profile may run
SEALS, BELUGA = "seals_aerial_drone", "beluga_seeker_wv3"


# ----------------------------------------------------------------------------------------------- data


@dataclass
class DetImages:
    """Images of one band set, padded to one size, with labelled animal centres (row, col in pixels)."""

    X: np.ndarray                       # (N, C, S, S) float32, normalised; padding is 0
    valid: np.ndarray                   # (N, S, S) bool
    points: list                        # N arrays (k, 2): centres to detect
    ignore: list                        # N arrays (m, 2): centres that count neither way (uncertain)
    gsd: np.ndarray                     # (N,) metres per pixel
    rows: pd.DataFrame                  # path, split, group, species, n_points
    wavelengths: np.ndarray
    widths: np.ndarray
    sensor: str
    extra: dict = field(default_factory=dict)

    def subset(self, idx) -> DetImages:
        idx = np.asarray(idx, int)
        return DetImages(self.X[idx], self.valid[idx], [self.points[i] for i in idx], [self.ignore[i] for i in idx],
                         self.gsd[idx], self.rows.iloc[idx].reset_index(drop=True), self.wavelengths, self.widths,
                         self.sensor, self.extra)

    def split(self, name: str) -> DetImages:
        return self.subset(np.flatnonzero(self.rows.split.to_numpy() == name))

    def __len__(self) -> int:
        return len(self.X)

    @property
    def n_points(self) -> int:
        return int(sum(len(p) for p in self.points))


def degrade(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average decimation (C, H, W) -> (C, H // f, W // f): the anti-aliased box filter of a coarser sensor."""
    c, h, w = image.shape
    h2, w2 = h // factor, w // factor
    return image[:, :h2 * factor, :w2 * factor].reshape(c, h2, factor, w2, factor).mean((2, 4))


def box_centres(boxes) -> np.ndarray:
    """(k, 2) centres (row, col) of xyxy pixel boxes."""
    b = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, np.float64)
    return np.stack([(b[:, 1] + b[:, 3]) / 2, (b[:, 0] + b[:, 2]) / 2], 1) if len(b) else np.zeros((0, 2))


def whale_centres(item) -> tuple[np.ndarray, np.ndarray]:
    """Centres of an item's 'certain' animals (to detect) and of its 'uncertain whale' ones (ignored in scoring)."""
    c = box_centres(item.boxes).astype(np.float32)
    sure = np.asarray(item.box_labels) != "uncertain whale" if len(c) else np.zeros(0, bool)
    return c[sure], c[~sure]


def _pad(x: np.ndarray, size: int):
    c, h, w = x.shape
    out = np.zeros((c, size, size), np.float32)
    out[:, :h, :w] = x[:, :size, :size]
    valid = np.zeros((size, size), bool)
    valid[:h, :w] = True
    return out, valid


def load_seal_images(splits: pd.DataFrame, stats: dict, factor: int = SEAL_DEGRADE, progress: bool = True) -> DetImages:
    """Every seal tile in the split table, degraded ``factor`` x (box centres scaled alike)."""
    src = get_source(SEALS)
    split_of = splits[splits.source == SEALS].groupby("path").split.first()
    items = [it for it in src.items() if it.path in split_of.index]
    norm = Normalizer.from_stats(stats[stats_key(SEALS, "rgb")])
    X, P, rows = [], [], []
    for it in tqdm(items, desc="seal tiles (degraded)", disable=not progress):
        with open_raster(data_dir() / it.path, expected_bands=3) as s:
            img = s.read().astype(np.float32)
        small = degrade(norm(img), factor)
        centres = box_centres(it.boxes) / factor
        inside = (centres[:, 0] < small.shape[1]) & (centres[:, 1] < small.shape[2])
        X.append(small)
        P.append(centres[inside].astype(np.float32))
        rows.append((it.path, split_of[it.path], it.group, it.extra.get("species", ""), int(inside.sum())))
    size = int(np.ceil(max(max(x.shape[1:]) for x in X) / 8) * 8)  # one padded size, a multiple of 8
    padded = [_pad(x, size) for x in X]
    sensor = sensor_of(items[0])
    return DetImages(np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded]), P, [np.zeros((0, 2), np.float32)] * len(P),
                     np.full(len(P), SEAL_GSD_M * factor), pd.DataFrame(rows, columns=["path", "split", "group", "species", "n_points"]),
                     np.asarray(sensor.wavelengths(("red", "green", "blue")), np.float32),
                     np.asarray(sensor.widths(("red", "green", "blue")), np.float32), sensor.id,
                     {"degrade": factor, "source_gsd_m": SEAL_GSD_M})


def load_beluga_images(stats: dict, splits: pd.DataFrame | None = None) -> DetImages:
    """The WorldView-3 chips (PAN) with whale centres; 'uncertain whale' centres are ignored in scoring."""
    src = get_source(BELUGA)
    items = src.items()
    norm = Normalizer.from_stats(stats[stats_key(BELUGA, "pan")])
    split_of = splits[splits.source == BELUGA].groupby("path").split.first() if splits is not None else pd.Series(dtype=str)
    X, P, I, gsd, rows = [], [], [], [], []
    for it in items:
        with open_raster(data_dir() / it.path, expected_bands=1) as s:
            X.append(norm(s.read().astype(np.float32)))
        sure, unsure = whale_centres(it)
        P.append(sure)
        I.append(unsure)
        gsd.append(it.gsd)
        rows.append((it.path, str(split_of.get(it.path, "eval")), it.group, "beluga", len(sure)))
    size = int(np.ceil(max(max(x.shape[1:]) for x in X) / 32) * 32)
    padded = [_pad(x, size) for x in X]
    sensor = sensor_of(items[0])
    return DetImages(np.stack([p[0] for p in padded]), np.stack([p[1] for p in padded]), P, I, np.asarray(gsd, np.float64),
                     pd.DataFrame(rows, columns=["path", "split", "group", "species", "n_points"]),
                     np.asarray(sensor.wavelengths(("pan",)), np.float32), np.asarray(sensor.widths(("pan",)), np.float32),
                     sensor.id)


# ----------------------------------------------------------------------------------------------- targets and loss


def heatmap_targets(points: list, size: int, sigma_px) -> np.ndarray:
    """(N, S, S) Gaussian peaks (max of overlapping ones) of ``sigma_px`` (scalar or per image), each centred on the
    pixel that holds its animal's centre, so that pixel is exactly 1: CenterNet's convention, which its focal
    loss needs (its positives are the pixels whose target is 1; a peak between pixel centres would have none)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sig = np.broadcast_to(np.asarray(sigma_px, np.float32), (len(points),))
    out = np.zeros((len(points), size, size), np.float32)
    for i, (pts, s) in enumerate(zip(points, sig)):
        for r, c in np.clip(np.floor(np.asarray(pts, np.float64).reshape(-1, 2)), 0, size - 1):
            np.maximum(out[i], np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * s * s)), out=out[i])
    return out


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel focal loss (Zhou et al., 2019), normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = (target >= 0.999) & valid
    neg = (~pos) & valid
    pos_loss = -(torch.log(p) * (1 - p) ** alpha)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p ** alpha * (1 - target) ** beta)[neg].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


# ----------------------------------------------------------------------------------------------- decoding and scoring


def find_peaks(heat: np.ndarray, valid: np.ndarray | None = None, min_score: float = 0.05, size: int = 3,
               top_k: int = 200) -> np.ndarray:
    """Local maxima of one heat-map as (k, 3) rows (row, col, score), best first."""
    mx = ndimage.maximum_filter(heat, size=size, mode="constant", cval=-np.inf)
    keep = (heat == mx) & (heat >= min_score)
    if valid is not None:
        keep &= valid
    r, c = np.nonzero(keep)
    s = heat[r, c]
    order = np.argsort(-s, kind="stable")[:top_k]
    return np.stack([r[order], c[order], s[order]], 1).astype(np.float32) if len(order) else np.zeros((0, 3), np.float32)


def match_image(dets: np.ndarray, gt: np.ndarray, ignore: np.ndarray, radius_px: float) -> np.ndarray:
    """Greedy matching by score: per detection 1 (true positive), 0 (false positive) or -1 (on an ignored animal)."""
    out = np.zeros(len(dets), np.int8)
    used = np.zeros(len(gt), bool)
    for k, (r, c, _) in enumerate(dets):
        if len(gt):
            d = np.hypot(gt[:, 0] - r, gt[:, 1] - c)
            d[used] = np.inf
            j = int(d.argmin())
            if d[j] <= radius_px:
                used[j] = True
                out[k] = 1
                continue
        if len(ignore) and np.hypot(ignore[:, 0] - r, ignore[:, 1] - c).min() <= radius_px:
            out[k] = -1
    return out


@dataclass
class Scored:
    """Every detection of a set of images with its score, match flag and image index, and the label counts."""

    scores: np.ndarray
    flags: np.ndarray       # 1 tp, 0 fp, -1 ignored
    image: np.ndarray
    n_gt: np.ndarray        # per image

    def at(self, thr: float, images: np.ndarray | None = None) -> dict:
        sel = self.scores >= thr
        img = self.image
        if images is not None:  # bootstrap: a resample of image indices (with repeats)
            counts = np.bincount(images, minlength=len(self.n_gt))
            w = counts[img]
            n_gt = float((self.n_gt * counts).sum())
        else:
            w = np.ones_like(img)
            n_gt = float(self.n_gt.sum())
        tp = float(((self.flags == 1) & sel) @ w)
        fp = float(((self.flags == 0) & sel) @ w)
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / n_gt if n_gt else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "n_gt": n_gt}

    def counts(self, thr: float) -> np.ndarray:
        return np.bincount(self.image[(self.scores >= thr) & (self.flags != -1)], minlength=len(self.n_gt))


def score_detections(dets: list, imgs: DetImages, radius_m: float) -> Scored:
    scores, flags, image = [], [], []
    for i, d in enumerate(dets):
        f = match_image(d, imgs.points[i], imgs.ignore[i], radius_m / float(imgs.gsd[i]))
        scores.append(d[:, 2])
        flags.append(f)
        image.append(np.full(len(d), i))
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return Scored(cat(scores, np.float32), cat(flags, np.int8), cat(image, np.int64),
                  np.array([len(p) for p in imgs.points], np.int64))


def pr_curve(s: Scored) -> pd.DataFrame:
    """Precision and recall at every detection score (ignored detections left out), highest score first."""
    keep = s.flags != -1
    order = np.argsort(-s.scores[keep], kind="stable")
    tp = np.cumsum(s.flags[keep][order] == 1)
    fp = np.cumsum(s.flags[keep][order] == 0)
    n_gt = max(int(s.n_gt.sum()), 1)
    return pd.DataFrame({"threshold": s.scores[keep][order], "precision": tp / np.maximum(tp + fp, 1), "recall": tp / n_gt})


def average_precision(s: Scored) -> float:
    """All-point interpolated AP (area under the monotone precision envelope over recall)."""
    c = pr_curve(s)
    if not len(c) or s.n_gt.sum() == 0:
        return 0.0
    rec = np.concatenate([[0.0], c.recall.to_numpy(), [c.recall.iloc[-1]]])
    prec = np.concatenate([[1.0], c.precision.to_numpy(), [0.0]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    return float(np.sum((rec[1:] - rec[:-1]) * prec[1:]))


def choose_threshold(s: Scored, min_precision: float = 0.0) -> float:
    """On validation: the score threshold with the best F1 among those reaching ``min_precision`` (else best F1)."""
    c = pr_curve(s)
    if not len(c):
        return 1.0
    f1 = (2 * c.precision * c.recall / (c.precision + c.recall).replace(0, np.nan)).fillna(0)
    ok = c.precision >= min_precision
    pick = f1.where(ok).idxmax() if ok.any() and f1[ok].max() > 0 else f1.idxmax()
    return float(c.threshold[pick])


def precision_target_threshold(s: Scored, target: float) -> float | None:
    """On validation: the lowest score threshold (most recall) whose precision reaches ``target``; None when no
    threshold does. Unlike :func:`choose_threshold` there is no fall-back: the point answers "what recall does
    this model keep at that precision", which may be a handful of sure detections. The rule is the wildfire one's
    (:func:`vhrfm.apps.segmentation.lowest_threshold_reaching`), on this task's curve."""
    return lowest_threshold_reaching(pr_curve(s), target)


def at_precision_target(val: Scored, test: Scored, target: float) -> dict:
    """Precision, recall, F1 and the counts (tp, fp, n_gt) on ``test`` at the threshold chosen on ``val`` by
    :func:`precision_target_threshold`; all None when no threshold reaches ``target`` on ``val``."""
    thr = precision_target_threshold(val, target)
    if thr is None:  # the same keys either way, so that a run's metrics have one structure whatever the values
        return {"target": target, "threshold": None, "reached_on_val": False, **dict.fromkeys(test.at(1.0))}
    return {"target": target, "threshold": thr, "reached_on_val": True, **{k: float(v) for k, v in test.at(thr).items()}}


def det_metrics(s: Scored, thr: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """Precision, recall, F1 at ``thr``, AP, count error per image; bootstrap 95 % CIs over images."""
    out = {k: float(v) for k, v in s.at(thr).items()}
    out["ap"] = average_precision(s)
    pred, true = s.counts(thr), s.n_gt
    out["count_mae"] = float(np.abs(pred - true).mean()) if len(true) else 0.0
    out["count_total_pred"], out["count_total_true"] = int(pred.sum()), int(true.sum())
    rng = np.random.default_rng(seed)
    n = len(s.n_gt)
    if n_boot and n:
        boots = [s.at(thr, rng.integers(0, n, n)) for _ in range(n_boot)]
        for k in ("precision", "recall", "f1"):
            v = np.array([b[k] for b in boots])
            out[f"{k}_ci95"] = [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]
    out["threshold"] = float(thr)
    out["n_images"] = int(n)
    return out


# ----------------------------------------------------------------------------------------------- models


def blob_response(x: np.ndarray, valid: np.ndarray, gsd, size_m: float, polarity: str) -> np.ndarray:
    """Difference of Gaussians (FWHM = ``size_m``, surround x3) on the band mean of normalised images (N, C, H, W);
    ``polarity`` bright, dark or abs; negative responses and invalid pixels are 0."""
    gsd = np.broadcast_to(np.asarray(gsd, np.float64), (len(x),))
    out = np.zeros(valid.shape, np.float32)
    for i in range(len(x)):
        lum = x[i].mean(0)
        s1 = size_m / 2.355 / float(gsd[i])
        dog = ndimage.gaussian_filter(lum, s1) - ndimage.gaussian_filter(lum, 3 * s1)
        r = {"bright": dog, "dark": -dog, "abs": np.abs(dog)}[polarity]
        out[i] = np.where(valid[i], np.maximum(r, 0), 0)
    return out


class BlobDetector:
    """Classical baseline: difference of Gaussians on the band mean (scales from the animal size in metres), the
    polarity (bright, dark or either) chosen on the training images by AP; scores mapped to [0, 1) with a scale
    (the 99.9th percentile of the training response) set on them."""

    def __init__(self, size_m: float = 1.5, radius_m: float = 1.5):
        self.size_m, self.radius_m = size_m, radius_m
        self.polarity, self.scale = "abs", 1.0

    def response(self, imgs: DetImages, polarity: str | None = None) -> np.ndarray:
        return blob_response(imgs.X, imgs.valid, imgs.gsd, self.size_m, polarity or self.polarity)

    def fit(self, imgs: DetImages) -> BlobDetector:
        best = None
        for pol in ("bright", "dark", "abs"):
            r = self.response(imgs, pol)
            scale = float(np.quantile(r[imgs.valid], 0.999)) or 1.0
            ap = average_precision(score_detections(decode(self._squash(r, scale), imgs), imgs, self.radius_m))
            if best is None or ap > best[0]:
                best = (ap, pol, scale)
        _, self.polarity, self.scale = best
        return self

    @staticmethod
    def _squash(r: np.ndarray, scale: float) -> np.ndarray:
        """Monotone map of the response to [0, 1) (keeps the ranking; no ties from clipping)."""
        return (1.0 - np.exp(-r / scale)).astype(np.float32)

    def heat(self, imgs: DetImages) -> np.ndarray:
        return self._squash(self.response(imgs), self.scale)

    def card_entry(self) -> dict:
        """The fitted detector, for a task-model card."""
        return {"type": "blob", "polarity": self.polarity, "scale": float(self.scale), "size_m": float(self.size_m)}


def decode(heat: np.ndarray, imgs: DetImages, min_score: float = 0.05) -> list:
    return [find_peaks(h, v, min_score) for h, v in zip(heat, imgs.valid)]


def _bands_for(model, imgs: DetImages, x: torch.Tensor):
    """A 3-band U-Net gets PAN replicated to 3 bands; any-band models take the bands as they are."""
    from vhrfm.heads import SMPUNet

    if isinstance(model, SMPUNet) and x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def train_detector(model, imgs: DetImages | list[DetImages], *, steps: int, batch_size: int, lr: float, sigma_m: float,
                   seed: int, weight_decay: float = 1e-4, encoder_lr_scale: float = 1.0, crop: int | None = None,
                   kd_teacher=None, kd_pool: DetImages | None = None, kd_weight: float = 1.0, progress: bool = True,
                   desc: str = "train"):
    """Focal heat-map loss, D4 augmentation; returns the loss history.

    ``imgs`` may be a list of image sets (domains: e.g. degraded drone seals and satellite chips, each with its own
    bands and GSD): the steps alternate between them, each batch drawn from one domain. ``crop`` trains on random
    crops of that side (one position per batch) of images larger than it: large satellite chips then cost what the
    small degraded drone images do.

    With ``kd_teacher`` (task-specific KD, :mod:`vhrfm.distill.task`): each step also draws a batch from
    ``kd_pool`` (every training image; its labels are not read) and adds ``kd_weight`` x the pixel-wise KL
    between the teacher's heat-map probabilities and the model's over valid pixels, per unit of teacher mass."""
    from vhrfm.apps.segmentation import optimiser_with_encoder_scale, random_d4
    from vhrfm.distill.task import bernoulli_kd_loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt, sched = optimiser_with_encoder_scale(model, lr, weight_decay, encoder_lr_scale, steps)
    domains = list(imgs) if isinstance(imgs, (list, tuple)) else [imgs]
    targets = [torch.from_numpy(heatmap_targets(d.points, d.X.shape[-1], sigma_m / d.gsd)) for d in domains]
    if kd_teacher is not None:
        kd_pool = domains[0] if kd_pool is None else kd_pool
        kd_teacher.eval()
    hist = []
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not progress):
        d, target = domains[step % len(domains)], targets[step % len(domains)]
        wl, wd = torch.from_numpy(d.wavelengths), torch.from_numpy(d.widths)
        idx = rng.integers(0, len(d), batch_size)
        x, t, v = torch.from_numpy(d.X[idx]), target[idx], torch.from_numpy(d.valid[idx])
        if crop is not None and crop < x.shape[-1]:
            r, c = rng.integers(0, x.shape[-1] - crop + 1, 2)
            x, t, v = (a[..., r:r + crop, c:c + crop] for a in (x, t, v))
        x, t, v = random_d4(rng, x, t, v)
        logits = model(_bands_for(model, d, x.contiguous()), wl, torch.from_numpy(d.gsd[idx]).float(), wd)[:, 0]
        loss = focal_heatmap_loss(logits, t, v)
        if kd_teacher is not None:
            k = rng.integers(0, len(kd_pool), batch_size)
            kx, kv = random_d4(rng, torch.from_numpy(kd_pool.X[k]), torch.from_numpy(kd_pool.valid[k]))
            kx, kg = kx.contiguous(), torch.from_numpy(kd_pool.gsd[k]).float()
            kwl, kwd = torch.from_numpy(kd_pool.wavelengths), torch.from_numpy(kd_pool.widths)
            with torch.no_grad():
                tl = kd_teacher(_bands_for(kd_teacher, kd_pool, kx), kwl, kg, kwd)[:, 0]
            sl = model(_bands_for(model, kd_pool, kx), kwl, kg, kwd)[:, 0]
            loss = loss + kd_weight * bernoulli_kd_loss(sl, tl, kv, normalise="mass")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
    model.eval()
    return hist


@torch.no_grad()
def predict_heat(model, imgs: DetImages, batch_size: int = 32, tta: bool = False) -> np.ndarray:
    """The heat map of every image (zero outside its valid pixels). With ``tta``: the mean over the 8 rotations
    and flips of each image, each turned back (:func:`vhrfm.apps.segmentation.positive_probs`; 8x the inference)."""
    model.eval()
    wl, wd = torch.from_numpy(imgs.wavelengths), torch.from_numpy(imgs.widths)
    out = []
    for i in range(0, len(imgs), batch_size):
        x = _bands_for(model, imgs, torch.from_numpy(imgs.X[i:i + batch_size]))
        gsd = torch.from_numpy(imgs.gsd[i:i + batch_size]).float()
        out.append(positive_probs(model, x, wl, gsd, wd, tta).numpy())
    return np.concatenate(out).astype(np.float32) * imgs.valid


# ----------------------------------------------------------------------------------------------- experiment


def fit_detector(name: str, sub: DetImages, teacher, seed: int, cfg: dict, *, student: dict | None = None,
                 output_prior: float | None = None, kd: dict | None = None, progress: bool = True, desc: str = "train"):
    """Build one learned detector of :mod:`vhrfm.heads` (seeded, output bias from ``output_prior``; None keeps the
    layer's default) and train it on ``sub`` with the profile's schedule. Returns (model, loss history)."""
    model = build_dense_model(name, sub.X.shape[1], teacher, seed, student=student, output_prior=output_prior)
    h = train_detector(model, sub, steps=train_steps(name, cfg), batch_size=cfg["batch_size"], lr=cfg["lr"], sigma_m=cfg["sigma_m"],
                       seed=seed, encoder_lr_scale=encoder_lr_scale(name, cfg["encoder_lr_scale"]), progress=progress,
                       desc=desc, **(kd or {}))
    return model, h


def score_val_test(heat, val: DetImages, test: DetImages, cfg: dict, seed: int):
    """Decode ``heat(images)``, choose the threshold on validation (``cfg["min_precision"]``), score test at it with
    ``cfg["n_boot"]`` bootstrap CIs, validation too (``["val"]``) and the val threshold reaching
    ``cfg["precision_target"]`` when set. Returns (metrics, test Scored, test detections, test inference seconds)."""
    radius = cfg["radius_m"]
    sv = score_detections(decode(heat(val), val), val, radius)
    thr = choose_threshold(sv, cfg["min_precision"])
    t1 = time.perf_counter()
    test_dets = decode(heat(test), test)
    infer_s = time.perf_counter() - t1
    st = score_detections(test_dets, test, radius)
    m = det_metrics(st, thr, cfg["n_boot"], seed)
    m["val"] = det_metrics(sv, thr, 0)
    if cfg.get("precision_target") is not None:
        m["at_precision_target"] = at_precision_target(sv, st, cfg["precision_target"])
    return m, st, test_dets, infer_s


def prior_ablation(cfg: dict, train: DetImages, val: DetImages, test: DetImages, budgets: dict, results: dict,
                   teacher, seed: int, student: dict | None, progress: bool = True) -> dict:
    """The output prior on and off, everything else equal: each model of ``cfg["prior_ablation"]["models"]`` is
    trained again at ``cfg["prior_ablation"]["budget"]`` by the main table's :func:`fit_detector` and
    :func:`score_val_test`, with the same seed, steps and data but the output layer's default bias; the "with prior"
    side is that model's run in the main table (same seed, so the two differ only by the output bias's initial
    value)."""
    spec = cfg["prior_ablation"]
    budget = spec["budget"]
    keys = ("precision", "recall", "f1", "ap", "f1_ci95")
    out = {"budget": budget, "prior": cfg["heatmap_prior"], "steps": cfg["steps"], "models": {}}
    for name in spec["models"]:
        if name not in results or budget not in results[name]:
            raise ValueError(f"prior ablation: {name} at {budget} is not in the main run (add it to models / budgets)")
        model, _ = fit_detector(name, train.subset(budgets[budget]), teacher, seed, cfg, student=student,
                                output_prior=None, progress=progress, desc=f"{name} {budget} without prior")
        off, _, _, _ = score_val_test(lambda d, m=model: predict_heat(m, d), val, test, cfg, seed)
        on = results[name][budget]
        out["models"][name] = {"with_prior": {k: on[k] for k in keys if k in on},
                               "without_prior": {k: off[k] for k in keys if k in off},
                               "ap_gain": on["ap"] - off["ap"], "f1_gain": on["f1"] - off["f1"]}
    return out


@dataclass
class MegafaunaTask(AppTask):
    """A profile's megafauna task as chapter 5 trains and scores it: ``train`` / ``val`` / ``test`` are splits of
    ``seals`` (drone seal images degraded to satellite GSD); ``sat`` the WorldView-3 whale chips."""

    seals: DetImages
    sat: DetImages


def load_task(profile: str, progress: bool = True) -> MegafaunaTask:
    """The profile's seal images (degraded to satellite GSD) and WorldView-3 chips from the data stage's splits and
    statistics, with the label budgets: what :func:`run_megafauna` trains on, and what a study starts from."""
    p = load_profile(profile)
    cfg, seed, res = p["megafauna"], p["seed"], results_dir(profile)
    splits, stats = pd.read_csv(res / "data" / "splits.csv"), load_stats(res / "data" / "norm_stats.json")
    seals = load_seal_images(splits, stats, cfg["degrade"], progress=progress)
    train = seals.split("train")
    return MegafaunaTask(cfg=cfg, seed=seed, train=train, val=seals.split("val"), test=seals.split("test"),
                         budgets=label_budgets(len(train), cfg["budgets"], seed), stats=stats,
                         teacher=models_dir(profile) / "teacher.safetensors", seals=seals,
                         sat=load_beluga_images(stats, splits))


def run_megafauna(profile: str, progress: bool = True) -> dict:
    """Train every model at every label budget on degraded seals; test on degraded seals and on WorldView-3 whales."""
    task = load_task(profile, progress)
    cfg, seed, seals, sat, stats, budgets = task.cfg, task.seed, task.seals, task.sat, task.stats, task.budgets
    train, val, test, teacher = task.train, task.val, task.test, task.teacher
    out = results_dir(profile) / "megafauna"
    out.mkdir(parents=True, exist_ok=True)
    (out / "budgets.json").write_text(json.dumps({"train_images": train.rows.path.tolist(), "budgets": budgets}, indent=1) + "\n")
    check_model_order(cfg["models"])
    student = student_spec(profile, cfg) if set(cfg["models"]) & set(STUDENT_MODELS) else None
    radius = cfg["radius_m"]
    results, sat_results, curves, timings, histories, keep, trained = {}, {}, {}, {}, {}, {}, {}
    for name in cfg["models"]:
        for budget, idx in budgets.items():
            sub = train.subset(idx)
            t0 = time.perf_counter()
            if name == "classical":
                det = BlobDetector(cfg["animal_size_m"], radius).fit(sub)
                heat = det.heat
                histories[f"{name}/{budget}"] = {"polarity": det.polarity}
            else:
                kd = kd_kwargs(name, results, trained, budget, train, cfg.get("kd_weight", 1.0))
                model, h = fit_detector(name, sub, teacher, seed, cfg, student=student,
                                        output_prior=cfg.get("heatmap_prior"), kd=kd, progress=progress,
                                        desc=f"{name} {budget}")
                histories[f"{name}/{budget}"] = {"loss": h}
                heat = lambda d, m=model: predict_heat(m, d)  # noqa: E731
            train_s = time.perf_counter() - t0
            m, st, test_dets, infer_s = score_val_test(heat, val, test, cfg, seed)
            thr = m["threshold"]
            m["train_images"], m["train_points"] = len(idx), sub.n_points
            results.setdefault(name, {})[budget] = m
            ss = score_detections(decode(heat(sat), sat), sat, radius)
            sat_results.setdefault(name, {})[budget] = det_metrics(ss, thr, cfg["n_boot"], seed)
            curves[f"{name}/{budget}"] = {"test": pr_curve(st).iloc[::max(1, len(st.scores) // 300)].to_dict(orient="list"),
                                          "satellite": pr_curve(ss).to_dict(orient="list")}
            timings[f"{name}/{budget}"] = {"train_s": round(train_s, 2), "test_inference_s": round(infer_s, 3),
                                           "test_images_per_s": round(len(test) / max(infer_s, 1e-9), 1)}
            keep[(name, budget)] = (heat, test_dets)
            trained[(name, budget)] = det if name == "classical" else model
    best_model, best_budget = max(((mn, b) for mn in results for b in results[mn]),
                                  key=lambda k: results[k[0]][k[1]]["val"]["f1"])
    bm, bs = results[best_model][best_budget], sat_results[best_model][best_budget]
    largest = max(cfg["budgets"], key=cfg["budgets"].get)
    picks = deployment_picks(results)
    index = save_megafauna_models(profile, {k: trained[k] for k in {*picks.values(), *((mn, largest) for mn in results)}},
                                  results, seals, stats, cfg, picks)
    ablation = prior_ablation(cfg, train, val, test, budgets, results, teacher, seed, student, progress) \
        if cfg.get("prior_ablation") and cfg.get("heatmap_prior") is not None else None
    cross = {}
    if cfg.get("cross_domain_model"):
        cross["satellite_only"] = leave_one_chip_out(sat, None, val, cfg, teacher, seed, progress)
        cross["both"] = leave_one_chip_out(sat, train, val, cfg, teacher, seed, progress)
    heat, dets = keep[(best_model, best_budget)]
    sat_heat = heat(sat)
    np.savez_compressed(out / "examples.npz", test_images=test.X[:16], test_heat=heat(test.subset(range(min(16, len(test))))),
                        sat_images=sat.X, sat_heat=sat_heat)
    (out / "detections.json").write_text(json.dumps({
        "test": {"paths": test.rows.path.tolist(), "points": [pt.tolist() for pt in test.points],
                 "dets": [d.tolist() for d in dets]},
        "satellite": {"paths": sat.rows.path.tolist(), "points": [pt.tolist() for pt in sat.points],
                      "ignore": [pt.tolist() for pt in sat.ignore], "gsd": sat.gsd.tolist(),
                      "dets": [d.tolist() for d in decode(sat_heat, sat)]}}) + "\n")
    keys = ("precision", "recall", "f1", "ap", "precision_ci95", "recall_ci95", "f1_ci95", "count_mae", "threshold",
            "at_precision_target")
    pick = (lambda r: {k: r[k] for k in keys if k in r})
    ran_fm = [m for m in TEACHER_MODELS if m in results]  # the foundation-model variants that ran
    metrics = {
        "profile": profile, "radius_m": radius, "degrade": cfg["degrade"], "gsd_m": float(seals.gsd[0]),
        "heatmap_prior": cfg.get("heatmap_prior"), "steps": cfg["steps"], "prior_ablation": ablation,
        "images": {"train": len(train), "val": len(val), "test": len(test), "satellite": len(sat)},
        "points": {"train": train.n_points, "val": val.n_points, "test": test.n_points, "satellite": sat.n_points,
                   "satellite_ignored": int(sum(len(i) for i in sat.ignore))},
        "budgets": {b: len(i) for b, i in budgets.items()},
        "test": {mn: {b: pick(r) for b, r in by.items()} for mn, by in results.items()},
        "val": {mn: {b: pick(r["val"]) for b, r in by.items()} for mn, by in results.items()},
        "satellite": {mn: {b: pick(r) for b, r in by.items()} for mn, by in sat_results.items()},
        "best": {"model": best_model, "budget": best_budget, "selected_on": "validation F1 (degraded seals)",
                 **{k: bm[k] for k in ("precision", "recall", "f1", "ap", "threshold")}},
        "best_satellite": {"model": best_model, "budget": best_budget, **{k: bs[k] for k in ("precision", "recall", "f1", "ap")}},
        "cross_domain": {
            "aerial_to_satellite": {"trained_on": "drone seals degraded to 0.3 m", "tested_on": "WorldView-3 beluga chips",
                                    "model": best_model, "budget": best_budget, "precision": bs["precision"],
                                    "recall": bs["recall"], "f1": bs["f1"], "ap": bs["ap"]},
            **cross,
            "note": f"satellite-only and joint: leave-one-chip-out over the {len(sat)} WorldView-3 chips "
                    f"({sat.n_points} certain whales), {cfg.get('cross_domain_model')} detector; a chip is only ever "
                    "predicted by a model that did not train on it. Aerial-to-satellite is the model chosen on validation.",
        },
        "goal": {
            "targets": {"precision": 0.90, "recall": 0.80, "at": "the threshold chosen on validation (best F1)"},
            "degraded_ok": bm["precision"] >= 0.90 and bm["recall"] >= 0.80,
            "satellite_ok": bs["precision"] >= 0.90 and bs["recall"] >= 0.80,
            "fm_vs_scratch_f1": {b: {"fm_model": (fm := max(ran_fm, key=lambda m: results[m][b]["val"]["f1"])),
                                     "fm_f1": results[fm][b]["f1"], "scratch_f1": results["unet_scratch"][b]["f1"],
                                     "margin": results[fm][b]["f1"] - results["unet_scratch"][b]["f1"]}
                                 for b in budgets if ran_fm and "unet_scratch" in results},
        },
        "deployed": {"model": picks["default"][0], "budget": picks["default"][1], "file": index["default"],
                     "selected_on": "validation F1 among the students (among every model when no student ran)",
                     **{k: results[picks["default"][0]][picks["default"][1]][k] for k in ("precision", "recall", "f1", "ap",
                                                                                          "threshold")}},
        "task_models": index,
        "distillation": distillation_block(results, budgets, student["arch"], cfg)
        if student else None,
        "throughput": timings,
        "classical_polarity": {b: histories[f"classical/{b}"]["polarity"] for b in budgets} if "classical" in results else {},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    (out / "curves.json").write_text(json.dumps({"pr": curves, "loss": {k: v.get("loss") for k, v in histories.items()}}) + "\n")
    return metrics


def leave_one_chip_out(sat: DetImages, seals_train: DetImages | None, seals_val: DetImages, cfg: dict, teacher,
                       seed: int, progress: bool = True) -> dict:
    """Satellite-only and joint (degraded seals + satellite) training, scored by leave-one-chip-out on the satellite
    chips: each chip is predicted by a model that never saw it, the detections of all folds are pooled and scored.

    The operating threshold of a joint model is chosen on the degraded-seal validation split, as for every other
    model; a satellite-only model has no validation data, so its threshold is chosen on its own training chips
    (optimistic). ``seals_train`` None gives the satellite-only setting."""
    name, radius = cfg["cross_domain_model"], cfg["radius_m"]
    kept, dets_all, thresholds = [], [], []
    for i in range(len(sat)):
        rest = sat.subset([j for j in range(len(sat)) if j != i])
        model = build_dense_model(name, sat.X.shape[1], teacher, seed, output_prior=cfg.get("heatmap_prior"))
        domains = [rest] if seals_train is None else [seals_train, rest]
        train_detector(model, domains, steps=cfg["cross_domain_steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                       sigma_m=cfg["sigma_m"], seed=seed, encoder_lr_scale=cfg["encoder_lr_scale"],
                       crop=cfg.get("cross_domain_crop"), progress=progress,
                       desc=f"{'satellite only' if seals_train is None else 'joint'}: chip {i + 1}/{len(sat)} held out")
        tune = rest if seals_train is None else seals_val
        thr = choose_threshold(score_detections(decode(predict_heat(model, tune), tune), tune, radius), cfg["min_precision"])
        one = sat.subset([i])
        d = decode(predict_heat(model, one), one)[0]
        dets_all.append(d)
        kept.append(d[d[:, 2] >= thr])
        thresholds.append(thr)
    pooled = score_detections(dets_all, sat, radius)
    at = score_detections(kept, sat, radius).at(0.0)
    return {"precision": at["precision"], "recall": at["recall"], "f1": at["f1"], "tp": at["tp"], "fp": at["fp"],
            "n_gt": at["n_gt"], "ap": average_precision(pooled), "thresholds": thresholds, "model": name,
            "steps": cfg["cross_domain_steps"], "crop": cfg.get("cross_domain_crop"), "threshold_chosen_on": "the training chips (in-sample)" if seals_train is None
            else "the degraded-seal validation split"}


def run_scene_check(profile: str, progress: bool = False) -> dict:
    """Run the deployed detector on each WorldView-3 chip as ``vhrfm predict --task megafauna CHIP --sensor
    worldview3`` does (PAN, normalised by the chip's own statistics), score the written points against the
    labels, and add the result to ``metrics.json`` under ``"scene"``."""
    import geopandas as gpd

    from vhrfm.apps.scene import adapt_to_scene, predict_points_scene
    from vhrfm.apps.taskmodel import load_task_model

    cfg = load_profile(profile)["megafauna"]
    res = results_dir(profile)
    out = res / "megafauna"
    index = json.loads((models_dir(profile) / "megafauna" / "index.json").read_text())
    model = load_task_model(models_dir(profile) / "megafauna" / f"{index['default']}.json", task="megafauna")
    rows, total = [], np.zeros(3)
    for it in get_source(BELUGA).items():
        chip = data_dir() / it.path
        folder = out / "scenes" / Path(it.path).stem
        try:
            adapted = adapt_to_scene(model, chip, sensor="worldview3")
        except VHRFMInputError as exc:  # a U-Net knows only RGB: say so instead of guessing a band mapping
            scene = {"model": index["default"], "not_applicable": str(exc)}
            break
        s = predict_points_scene(chip, adapted, folder, tile=256, progress=progress)
        pts = gpd.read_file(folder / s["outputs"]["points"])
        dets = np.stack([pts.row, pts["col"], pts.score], 1).astype(np.float32) if len(pts) else np.zeros((0, 3), np.float32)
        sure, unsure = whale_centres(it)
        flags = match_image(dets, sure, unsure, cfg["radius_m"] / s["gsd_m"])
        tp, fp = int((flags == 1).sum()), int((flags == 0).sum())
        total += (tp, fp, len(sure))
        rows.append({"chip": it.path, "gsd_m": s["gsd_m"], "whales": len(sure), "detected": s["count"], "tp": tp,
                     "fp": fp, "runtime_s": s["runtime_s"]})
    else:
        tp, fp, n = total
        p_, r_ = (tp / (tp + fp) if tp + fp else 1.0), (tp / n if n else 0.0)
        scene = {"model": index["default"], "chips": rows, "precision": p_, "recall": r_,
                 "f1": 2 * p_ * r_ / (p_ + r_) if p_ + r_ else 0.0,
                 "what": "vhrfm predict --task megafauna --sensor worldview3 on each chip (PAN normalised by the chip's "
                         "own statistics); points matched to certain whales, uncertain ones ignored"}
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["scene"] = scene
    metrics_path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return scene


def model_tag(model_name: str, budget: str) -> str:
    return f"megafauna_{model_name}_{budget.replace('%', 'pct')}"


def save_megafauna_models(profile: str, models: dict, results: dict, seals: DetImages, stats: dict, cfg: dict,
                          picks: dict[str, tuple[str, str]]) -> dict:
    """Each (model, budget) as a task model under models/megafauna/ (card + weights), and index.json mapping each
    name of ``picks`` (default, student, teacher, best_val) to a model."""
    from vhrfm.apps.taskmodel import encoder_card, save_task_model
    from vhrfm.data.sources import SOURCES

    out = models_dir(profile) / "megafauna"
    out.mkdir(parents=True, exist_ok=True)
    norm = stats[stats_key(SEALS, "rgb")]
    for (name, budget), model in models.items():
        r = results[name][budget]
        kind = {"classical": "classical", "unet_scratch": "unet"}.get(name, "segmenter")
        card = {
            "task": "megafauna", "name": model_tag(name, budget), "model": name, "kind": kind, "budget": budget,
            "positive_class": "animal", "output": "points",
            "bands": ["red", "green", "blue"], "wavelengths": [float(v) for v in seals.wavelengths],
            "widths": [float(v) for v in seals.widths], "gsd_m": float(seals.gsd[0]), "sensor": seals.sensor,
            "tile_size": 256, "norm": {"key": stats_key(SEALS, "rgb"), "mean": [float(v) for v in norm["mean"]],
                                       "std": [float(v) for v in norm["std"]]},
            "threshold": r["threshold"], "threshold_chosen_on": "validation (degraded seals)",
            "decoder": {"type": "heatmap_peaks", "min_score": 0.05, "peak_window_px": 3, "radius_m": cfg["radius_m"],
                        "sigma_m": cfg["sigma_m"]},
            "test": {k: r[k] for k in ("precision", "recall", "f1", "ap")},
            "training": {**{k: cfg[k] for k in ("batch_size", "lr", "degrade")},
                         "steps": train_steps(name, cfg) if kind == "segmenter" else cfg["steps"],
                         "heatmap_prior": cfg.get("heatmap_prior") if kind != "classical" else None,
                         "encoder_lr_scale": encoder_lr_scale(name, cfg["encoder_lr_scale"]) if kind == "segmenter"
                         else None},
            "data": [{"source": SEALS, "licence": SOURCES[SEALS].licence, "attribution": SOURCES[SEALS].attribution,
                      "note": f"drone photographs degraded x{cfg['degrade']} by area averaging to satellite GSD"}],
            "profile": profile, "command": f"dvc repro megafauna@{profile}",
            "limits": "trained on degraded drone photographs of seals on land; satellite whales are out of distribution",
        }
        if kind == "segmenter":
            card.update(encoder_card(name, model))
        save_task_model(out / card["name"], model, card)
    index = {**{k: model_tag(*v) for k, v in picks.items()}, "models": sorted(model_tag(*k) for k in models)}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


__all__ = ["load_task", "MegafaunaTask", "run_scene_check", "model_tag", "save_megafauna_models", "blob_response", "MODELS", "DetImages", "degrade", "load_seal_images", "load_beluga_images", "box_centres", "whale_centres", "heatmap_targets",
           "focal_heatmap_loss", "find_peaks", "match_image", "score_detections", "pr_curve", "average_precision",
           "choose_threshold", "precision_target_threshold", "at_precision_target", "det_metrics", "BlobDetector", "decode", "train_detector", "predict_heat", "run_megafauna",
           "leave_one_chip_out"]
