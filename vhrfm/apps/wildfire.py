"""Rapid wildfire mapping: burned-area segmentation with few labels, models compared in one run.

Models (same tiles, same splits, same budgets): a classical spectral-index threshold, a U-Net trained
from scratch (segmentation-models-pytorch), and the pretrained teacher with a light dense head, frozen
and fine-tuned. The operating threshold of every model is chosen on validation (precision first) and
the metrics are reported on test.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from vhrfm.apps.segmentation import (SegTiles, choose_threshold, label_budgets, load_seg_tiles, pr_curve, predict_probs,
                                     seg_metrics, train_segmenter)
from vhrfm.checkpoint import load_encoder
from vhrfm.config import load_profile, models_dir, results_dir
from vhrfm.data.datasets import IGNORE, load_splits
from vhrfm.data.normalize import load_stats, stats_key
from vhrfm.heads import Segmenter, SMPUNet

MODELS = ("classical", "unet_scratch", "teacher_frozen", "teacher_finetuned")


# ----------------------------------------------------------------------------------------------- classical


def _band(wavelengths, target, tol):
    d = np.abs(np.asarray(wavelengths) - target)
    return int(d.argmin()) if d.min() <= tol else None


def spectral_indices(raw: np.ndarray, wavelengths) -> dict[str, np.ndarray]:
    """Burn scores from raw band values (N, C, H, W): higher = more likely burned.

    NBR (NIR vs SWIR-2, Key & Benson 2006) and NDVI where the bands exist; for RGB-only imagery the
    darkness (1 - mean brightness, relative) and a red-green index (burn scars are dark and brown).
    """
    r, g, b = (_band(wavelengths, t, 40) for t in (660, 560, 485))
    nir, swir2 = _band(wavelengths, 842, 80), _band(wavelengths, 2200, 150)
    eps = 1e-6
    out = {}
    if nir is not None and swir2 is not None:
        out["neg_nbr"] = -(raw[:, nir] - raw[:, swir2]) / (raw[:, nir] + raw[:, swir2] + eps)
    if nir is not None and r is not None:
        out["neg_ndvi"] = -(raw[:, nir] - raw[:, r]) / (raw[:, nir] + raw[:, r] + eps)
    vis = [i for i in (r, g, b) if i is not None]
    if vis:
        bright = raw[:, vis].mean(1)
        out["darkness"] = -bright
    if r is not None and g is not None:
        out["red_green"] = (raw[:, r] - raw[:, g]) / (raw[:, r] + raw[:, g] + eps)
    return out


def change_indices(pre_raw: np.ndarray, post_raw: np.ndarray, wavelengths) -> dict[str, np.ndarray]:
    """Pre/post change of every index (post minus pre; e.g. ``d_neg_nbr`` is the dNBR of Key & Benson)."""
    if pre_raw.shape != post_raw.shape:
        from vhrfm.errors import VHRFMInputError

        raise VHRFMInputError("pre- and post-fire images must share shape and bands", expected=pre_raw.shape,
                              found=post_raw.shape)
    pre, post = spectral_indices(pre_raw, wavelengths), spectral_indices(post_raw, wavelengths)
    return {f"d_{k}": post[k] - pre[k] for k in post}


def _scale01(score, lo, hi):
    return np.clip((score - lo) / max(hi - lo, 1e-9), 0, 1).astype(np.float32)


class ClassicalIndex:
    """Picks the spectral index with the best F1 on the (budget's) training tiles; scores scaled to [0, 1]."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32)[None, :, None, None]
        self.std = np.asarray(std, np.float32)[None, :, None, None]
        self.name = None
        self.range = None

    def _raw(self, tiles: SegTiles):
        return tiles.X * self.std + self.mean

    def fit(self, tiles: SegTiles):
        idx = spectral_indices(self._raw(tiles), tiles.wavelengths)
        best = None
        for name, score in idx.items():
            lab = tiles.Y != IGNORE
            lo, hi = np.percentile(score[lab], [1, 99])
            prob = _scale01(score, lo, hi)
            thr = choose_threshold(prob, tiles.Y, min_precision=0.0)
            f1 = seg_metrics(prob, tiles.Y, thr, n_boot=0)["f1"]
            if best is None or f1 > best[0]:
                best = (f1, name, (lo, hi))
        _, self.name, self.range = best
        return self

    def predict(self, tiles: SegTiles) -> np.ndarray:
        return _scale01(spectral_indices(self._raw(tiles), tiles.wavelengths)[self.name], *self.range)


# ----------------------------------------------------------------------------------------------- experiment


def build_model(name: str, tiles: SegTiles, teacher_path, seed: int):
    torch.manual_seed(seed)
    if name == "unet_scratch":
        return SMPUNet(in_channels=tiles.X.shape[1])
    if name in ("teacher_frozen", "teacher_finetuned"):
        return Segmenter(load_encoder(teacher_path), freeze_encoder=name == "teacher_frozen")
    raise ValueError(f"unknown model {name!r}")


def run_wildfire(profile: str, progress: bool = True) -> dict:
    """Train and evaluate every model at every label budget; write metrics, predictions and curves."""
    p = load_profile(profile)
    cfg, seed = p["wildfire"], p["seed"]
    res = results_dir(profile)
    out = res / "wildfire"
    out.mkdir(parents=True, exist_ok=True)
    splits, stats = load_splits(res / "data" / "splits.csv"), load_stats(res / "data" / "norm_stats.json")
    tiles = load_seg_tiles(cfg["sources"], splits, stats, p["data"]["tile_size"], progress=progress)
    train, val, test = tiles.split("train"), tiles.split("val"), tiles.split("test")
    budgets = label_budgets(len(train), cfg["budgets"], seed)
    (out / "budgets.json").write_text(json.dumps({"train_tiles": train.rows[["path", "row_off", "col_off"]].values.tolist(),
                                                  "budgets": budgets}, indent=1) + "\n")
    entry = stats[stats_key(cfg["sources"][0], str(tiles.rows["product"].iat[0]))]
    teacher = models_dir(profile) / "teacher.safetensors"
    results, curves, histories, timings = {}, {}, {}, {}
    test_probs = {}
    for model_name in cfg["models"]:
        for budget, idx in budgets.items():
            sub = train.subset(idx)
            t0 = time.perf_counter()
            if model_name == "classical":
                clf = ClassicalIndex(entry["mean"], entry["std"]).fit(sub)
                predict = clf.predict
                histories[f"{model_name}/{budget}"] = {"index": clf.name}
            else:
                model = build_model(model_name, tiles, teacher, seed)
                h = train_segmenter(model, sub, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                    crop=cfg["crop"], seed=seed, encoder_lr_scale=cfg["encoder_lr_scale"],
                                    progress=progress, desc=f"{model_name} {budget}")
                histories[f"{model_name}/{budget}"] = {"loss": h}
                predict = lambda t, m=model: predict_probs(m, t)  # noqa: E731
            train_s = time.perf_counter() - t0
            pv = predict(val)
            thr = choose_threshold(pv, val.Y, cfg["min_precision"])
            t1 = time.perf_counter()
            pt = predict(test)
            infer_s = time.perf_counter() - t1
            m = seg_metrics(pt, test.Y, thr, n_boot=cfg["n_boot"], seed=seed)
            m["val"] = seg_metrics(pv, val.Y, thr, n_boot=0)
            m["train_tiles"] = len(idx)
            results.setdefault(model_name, {})[budget] = m
            curves[f"{model_name}/{budget}"] = pr_curve(pt, test.Y).to_dict(orient="list")
            timings[f"{model_name}/{budget}"] = {"train_s": round(train_s, 2), "test_inference_s": round(infer_s, 3),
                                                 "test_mpx_per_s": round(test.Y.size / 1e6 / max(infer_s, 1e-9), 3)}
            test_probs[f"{model_name}/{budget}"] = pt
    # the best model is chosen on validation F1 among budgets of at most 10 % of the labels
    small = [b for b, f in cfg["budgets"].items() if f <= 0.10]
    best_model, best_budget = max(((mn, b) for mn in results for b in small), key=lambda k: results[k[0]][k[1]]["val"]["f1"])
    bm = results[best_model][best_budget]
    np.savez_compressed(out / "test_predictions.npz", **{k.replace("/", "__"): v for k, v in test_probs.items()},
                        labels=test.Y, images=test.X)
    metrics = {
        "profile": profile, "sources": cfg["sources"], "sensor": tiles.sensor, "gsd_m": tiles.gsd,
        "tiles": {"train": len(train), "val": len(val), "test": len(test)},
        "budgets": {b: len(i) for b, i in budgets.items()},
        "test": {mn: {b: {k: r[k] for k in ("precision", "recall", "f1", "iou", "precision_ci95", "recall_ci95", "f1_ci95",
                                             "iou_ci95", "threshold")} for b, r in by.items()} for mn, by in results.items()},
        "val": {mn: {b: r["val"] for b, r in by.items()} for mn, by in results.items()},
        "best": {"model": best_model, "budget": best_budget, "selected_on": "validation F1, budgets <= 10 %",
                 **{k: bm[k] for k in ("precision", "recall", "f1", "iou", "threshold")}},
        "throughput": timings,
        "classical_index": {b: histories[f"classical/{b}"]["index"] for b in budgets} if "classical" in results else {},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    (out / "curves.json").write_text(json.dumps({"pr": curves, "loss": {k: v.get("loss") for k, v in histories.items()}}) + "\n")
    return metrics


def load_test_predictions(profile: str) -> dict:
    path = results_dir(profile) / "wildfire" / "test_predictions.npz"
    with np.load(path) as z:
        return {k.replace("__", "/"): z[k] for k in z.files}


__all__ = ["MODELS", "ClassicalIndex", "spectral_indices", "change_indices", "run_wildfire", "load_test_predictions"]
