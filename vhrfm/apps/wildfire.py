"""Rapid wildfire mapping: burned-area segmentation with few labels, models compared in one run.

Models (same tiles, same splits, same budgets): a classical spectral-index threshold, a U-Net trained
from scratch (segmentation-models-pytorch), the pretrained teacher with a light dense head, frozen
and fine-tuned, the teacher fine-tuned under the U-Net's decoder (``teacher_unet``) and that architecture from
random weights (``anyband_unet_scratch``), and a compact student with the light head: from scratch, fine-tuned
from its self-supervised KD weights, and fine-tuned with task-specific KD from the teacher
(:mod:`vhrfm.distill.task`); ``params.yaml`` names which of them a profile runs. Every model is trained by
:func:`fit_model` (the learned ones by :func:`fit_dense`) and scored by :func:`score_val_test`, in the chapter and in
its studies (``scripts/``): the operating threshold is chosen on validation
(best F1 above the precision floor) and the metrics are reported on test. A bright-cloud rule fitted on the
training tiles' cloud masks goes into every task-model card: whole-scene prediction writes the pixels it flags
as unknown instead of burned or unburned.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vhrfm.apps.segmentation import (AppTask, SegTiles, at_precision_target, choose_threshold, label_budgets,
                                     load_seg_tiles, pr_curve, predict_probs, seg_metrics, train_segmenter)
from vhrfm.apps.taskmodel import deployment_picks
from vhrfm.config import load_profile, models_dir, results_dir
from vhrfm.data.datasets import IGNORE, load_splits
from vhrfm.data.normalize import load_stats, stats_key
from vhrfm.data.splits import source_setting
from vhrfm.distill.task import check_model_order, distillation_block, kd_kwargs, student_spec
from vhrfm.heads import DENSE_MODELS, STUDENT_MODELS, TEACHER_MODELS, build_dense_model, encoder_lr_scale, train_steps

MODELS = ("classical", *DENSE_MODELS)  # every model a profile may run


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

    def card_entry(self) -> dict:
        """The fitted rule, for a task-model card."""
        return {"type": "spectral_index", "index": self.name, "range": [float(v) for v in self.range]}


def fit_cloud_rule(tiles: SegTiles, max_flagged: float = 0.005) -> dict:
    """A bright-cloud rule from the tiles' ignore masks (clouds, smoke, shadows): flag a pixel when its minimum
    normalised value over the visible bands exceeds ``min_z``, the lowest threshold that flags at most
    ``max_flagged`` of the labelled (burned or unburned) pixels. Returns the rule and what it catches on these
    tiles. Dark shadows and thin smoke are not caught by design: they look like burn scars in true colour."""
    vis = [i for i, w in enumerate(tiles.wavelengths) if 400.0 <= float(w) <= 700.0]
    if not vis:
        raise ValueError("no visible band: a brightness cloud rule needs at least one band in 400-700 nm")
    z = tiles.X[:, vis].min(1)
    lab, ign = tiles.Y != IGNORE, tiles.Y == IGNORE
    min_z = float(np.quantile(z[lab], 1.0 - max_flagged, method="higher"))  # a data value: "> min_z" stays within budget
    flagged = z > min_z
    return {"type": "bright_visible", "min_z": min_z, "max_flagged_labelled": max_flagged,
            "flagged_labelled": float(flagged[lab].mean()),
            "flagged_burned": float(flagged[tiles.Y == 1].mean()) if (tiles.Y == 1).any() else 0.0,
            "caught_ignored": float(flagged[ign].mean()) if ign.any() else None,
            "fitted_on": "the ignore (cloud / smoke / shadow) masks of every training tile"}


# ----------------------------------------------------------------------------------------------- experiment


def fit_dense(model_name: str, sub: SegTiles, teacher, seed: int, cfg: dict, *, student: dict | None = None,
              kd: dict | None = None, encoder_lr: float | None = None, progress: bool = True, desc: str = "train"):
    """Build one learned model of :mod:`vhrfm.heads` (seeded) and train it on ``sub`` with the profile's schedule;
    ``encoder_lr`` overrides the model's encoder learning-rate factor (default: :func:`encoder_lr_scale` of the
    profile's). Returns (model, loss history)."""
    model = build_dense_model(model_name, sub.X.shape[1], teacher, seed, student=student)
    scale = encoder_lr_scale(model_name, cfg["encoder_lr_scale"]) if encoder_lr is None else float(encoder_lr)
    h = train_segmenter(model, sub, steps=train_steps(model_name, cfg), batch_size=cfg["batch_size"], lr=cfg["lr"], crop=cfg["crop"],
                        seed=seed, encoder_lr_scale=scale, dice_weight=cfg.get("dice_weight", 0.0), progress=progress,
                        desc=desc, **(kd or {}))
    return model, h


def score_val_test(predict, val: SegTiles, test: SegTiles, min_precision: float, n_boot: int = 0, seed: int = 0,
                   precision_target: float | None = None):
    """Choose the threshold on validation (best F1 above ``min_precision``), score test at it (with ``n_boot``
    bootstrap CIs) and validation too (``["val"]``); with ``precision_target``, also test at the lowest validation
    threshold reaching that precision (``["at_precision_target"]``, :func:`~vhrfm.apps.segmentation.at_precision_target`).
    Returns (metrics, validation probabilities, test probabilities, test inference seconds)."""
    pv = predict(val)
    t1 = time.perf_counter()
    pt = predict(test)
    infer_s = time.perf_counter() - t1
    return score_probs(pv, val, pt, test, min_precision, n_boot, seed, precision_target), pv, pt, infer_s


def score_probs(pv: np.ndarray, val: SegTiles, pt: np.ndarray, test: SegTiles, min_precision: float, n_boot: int = 0,
                seed: int = 0, precision_target: float | None = None) -> dict:
    """:func:`score_val_test` on probabilities already computed (``pv`` of ``val``, ``pt`` of ``test``)."""
    thr = choose_threshold(pv, val.Y, min_precision)
    m = seg_metrics(pt, test.Y, thr, n_boot=n_boot, seed=seed)
    m["val"] = seg_metrics(pv, val.Y, thr, n_boot=0)
    if precision_target is not None:
        m["at_precision_target"] = at_precision_target(pv, val.Y, pt, test.Y, precision_target)
    return m


def _ensemble_entry(members: list[tuple[np.ndarray, np.ndarray]], val: SegTiles, test: SegTiles, cfg: dict,
                    seed: int) -> dict:
    """The mean of the members' (validation, test) probabilities, scored as one model by :func:`score_probs`."""
    pv = np.mean([m[0] for m in members], axis=0)
    pt = np.mean([m[1] for m in members], axis=0)
    r = score_probs(pv, val, pt, test, cfg["min_precision"], cfg.get("n_boot", 0), seed, cfg.get("precision_target"))
    return {"members": len(members), "val_f1": r["val"]["f1"],
            **{k: r[k] for k in ("precision", "recall", "f1", "iou", "threshold", "f1_ci95", "precision_ci95")
               if k in r},
            **({"at_precision_target": r["at_precision_target"]} if "at_precision_target" in r else {})}


def pretraining_ablation(spec: dict, cfg: dict, train: SegTiles, val: SegTiles, test: SegTiles, budgets: dict,
                         results: dict, teacher, seed: int, progress: bool = True, trained: dict | None = None,
                         probs: dict | None = None) -> dict:
    """What the pretrained weights add, over several seeds at one budget: each variant of ``spec["variants"]``
    ({"name", "model": a dense model of :mod:`vhrfm.heads`, optional "encoder_lr_scale"}) is trained with every seed
    of ``spec["seeds"]`` (the seed sets the initial weights and the training crops; the labelled tiles are the
    budget's, the same for all) by the main table's :func:`fit_dense` and :func:`score_probs`: test F1 and
    precision, with their mean and standard deviation over seeds. A run identical to one of the main table (its
    seed, model and learning-rate scale) is taken from it, not trained again.

    With ``spec["ensemble"]``, the seeds of each variant are also scored as one model, the mean of their
    probabilities (``"ensemble"``), and so is the same with D4 test-time augmentation (``"ensemble_tta"``, and
    ``f1_tta`` / ``precision_tta`` per run): threshold on validation, test precision, recall, F1 with CIs and the
    precision-target point, as the main table. The main table's member is its (validation, test) probabilities
    (``probs``) and, for TTA, its trained model (``trained``); both keyed (model, budget)."""
    budget = spec["budget"]
    sub = train.subset(budgets[budget])
    ensemble = bool(spec.get("ensemble", False))
    variants = {}
    for v in spec["variants"]:
        name, model_name = v["name"], v["model"]
        default_scale = encoder_lr_scale(model_name, cfg["encoder_lr_scale"])
        scale = float(v.get("encoder_lr_scale", default_scale))
        runs, members = [], {False: [], True: []}
        for s in spec["seeds"]:
            if s == seed and scale == default_scale and budget in results.get(model_name, {}):
                r, src = results[model_name][budget], "main table"
                model, plain = (trained or {}).get((model_name, budget)), (probs or {}).get((model_name, budget))
                if ensemble and (model is None or plain is None):
                    raise ValueError(f"the seed ensemble of {name} needs the main table's trained "
                                     f"{model_name} at {budget} and its probabilities (pass trained= and probs=)")
            else:
                model, _ = fit_dense(model_name, sub, teacher, s, cfg, encoder_lr=scale, progress=progress,
                                     desc=f"{name} {budget} seed {s}")
                plain = (predict_probs(model, val), predict_probs(model, test))
                r = score_probs(plain[0], val, plain[1], test, cfg["min_precision"])
                src = "trained here"
            run = {"seed": s, "f1": r["f1"], "precision": r["precision"], "recall": r["recall"],
                   "val_f1": r["val"]["f1"], "from": src}
            if ensemble:
                pv, pt = predict_probs(model, val, tta=True), predict_probs(model, test, tta=True)
                members[False].append(plain)
                members[True].append((pv, pt))
                rt = score_probs(pv, val, pt, test, cfg["min_precision"])
                run |= {"f1_tta": rt["f1"], "precision_tta": rt["precision"], "recall_tta": rt["recall"]}
            runs.append(run)
        f1, vf1 = np.array([r["f1"] for r in runs]), np.array([r["val_f1"] for r in runs])
        variants[name] = {"model": model_name, "encoder_lr_scale": scale, "runs": runs,
                          "f1_mean": float(f1.mean()), "f1_sd": float(f1.std(ddof=1)) if len(f1) > 1 else None,
                          "val_f1_mean": float(vf1.mean()),
                          "precision_mean": float(np.mean([r["precision"] for r in runs]))}
        if ensemble:
            variants[name]["f1_tta_mean"] = float(np.mean([r["f1_tta"] for r in runs]))
            variants[name]["precision_tta_mean"] = float(np.mean([r["precision_tta"] for r in runs]))
            variants[name]["ensemble"] = _ensemble_entry(members[False], val, test, cfg, seed)
            variants[name]["ensemble_tta"] = _ensemble_entry(members[True], val, test, cfg, seed)
    return {"budget": budget, "seeds": list(spec["seeds"]), "steps": cfg["steps"], "ensemble": ensemble,
            "variants": variants}


@dataclass
class WildfireTask(AppTask):
    """A profile's wildfire task as chapter 4 trains and scores it; ``tiles`` holds every split's tiles and
    ``norm_key`` names their entry of the normalisation statistics (the classical index's and the task models')."""

    tiles: SegTiles
    norm_key: str

    @property
    def norm_entry(self) -> dict:
        """The tiles' normalisation statistics (band means and standard deviations of the data stage)."""
        return self.stats[self.norm_key]


def fit_model(model_name: str, sub: SegTiles, task: WildfireTask, seed: int, *, student: dict | None = None,
              kd: dict | None = None, progress: bool = True, desc: str = "train"):
    """Train one of chapter 4's models on ``sub``, as the chapter and its studies do: ``classical`` is the spectral
    index (:class:`ClassicalIndex`, fitted with the task's normalisation entry), any other name a learned model of
    :mod:`vhrfm.heads` trained by :func:`fit_dense` with the task's settings and teacher. Returns (the trained model,
    ``predict``: SegTiles -> burned probabilities, history: ``{"index": name}`` or ``{"loss": [...]}``)."""
    if model_name == "classical":
        clf = ClassicalIndex(task.norm_entry["mean"], task.norm_entry["std"]).fit(sub)
        return clf, clf.predict, {"index": clf.name}
    model, h = fit_dense(model_name, sub, task.teacher, seed, task.cfg, student=student, kd=kd, progress=progress,
                         desc=desc)
    return model, (lambda t: predict_probs(model, t)), {"loss": h}


def load_task(profile: str, progress: bool = True) -> WildfireTask:
    """The profile's wildfire tiles (from the data stage's splits and statistics), split, with their label budgets:
    what :func:`run_wildfire` trains on, and what a study of one of its settings starts from."""
    p = load_profile(profile)
    cfg, seed, res = p["wildfire"], p["seed"], results_dir(profile)
    splits, stats = load_splits(res / "data" / "splits.csv"), load_stats(res / "data" / "norm_stats.json")
    tile_size = source_setting(cfg["sources"][0], "tile_size", p["data"]["tile_size"], p["data"].get("per_source"))
    tiles = load_seg_tiles(cfg["sources"], splits, stats, tile_size, progress=progress)
    train = tiles.split("train")
    return WildfireTask(cfg=cfg, seed=seed, train=train, val=tiles.split("val"), test=tiles.split("test"),
                        budgets=label_budgets(len(train), cfg["budgets"], seed, masks=train.Y), stats=stats,
                        teacher=models_dir(profile) / "teacher.safetensors", tiles=tiles,
                        norm_key=stats_key(cfg["sources"][0], str(tiles.rows["product"].iat[0])))


def run_wildfire(profile: str, progress: bool = True) -> dict:
    """Train and evaluate every model at every label budget; write metrics, predictions and curves."""
    task = load_task(profile, progress)
    cfg, seed, tiles, budgets, teacher = task.cfg, task.seed, task.tiles, task.budgets, task.teacher
    train, val, test = task.train, task.val, task.test
    out = results_dir(profile) / "wildfire"
    out.mkdir(parents=True, exist_ok=True)
    (out / "budgets.json").write_text(json.dumps({"train_tiles": train.rows[["path", "row_off", "col_off"]].values.tolist(),
                                                  "budgets": budgets}, indent=1) + "\n")
    check_model_order(cfg["models"])
    student = student_spec(profile, cfg) if set(cfg["models"]) & set(STUDENT_MODELS) else None
    results, curves, histories, timings = {}, {}, {}, {}
    trained, probs = {}, {}
    for model_name in cfg["models"]:
        for budget, idx in budgets.items():
            sub = train.subset(idx)
            t0 = time.perf_counter()
            kd = None if model_name == "classical" else kd_kwargs(model_name, results, trained, budget, train,
                                                                   cfg.get("kd_weight", 1.0))
            model, predict, histories[f"{model_name}/{budget}"] = fit_model(
                model_name, sub, task, seed, student=student, kd=kd, progress=progress, desc=f"{model_name} {budget}")
            train_s = time.perf_counter() - t0
            trained[(model_name, budget)] = model
            m, pv, pt, infer_s = score_val_test(predict, val, test, cfg["min_precision"], cfg["n_boot"], seed,
                                                precision_target=cfg.get("precision_target"))
            probs[(model_name, budget)] = (pv, pt)
            m["train_tiles"] = len(idx)
            results.setdefault(model_name, {})[budget] = m
            curves[f"{model_name}/{budget}"] = pr_curve(pt, test.Y).to_dict(orient="list")
            timings[f"{model_name}/{budget}"] = {"train_s": round(train_s, 2), "test_inference_s": round(infer_s, 3),
                                                 "test_mpx_per_s": round(test.Y.size / 1e6 / max(infer_s, 1e-9), 3)}
    # the best model is chosen on validation F1 among budgets of at most 10 % of the labels
    small = [b for b, f in cfg["budgets"].items() if f <= 0.10]
    best_model, best_budget = max(((mn, b) for mn in results for b in small), key=lambda k: results[k[0]][k[1]]["val"]["f1"])
    bm = results[best_model][best_budget]
    picks = deployment_picks(results, few_label=(best_model, best_budget))
    deploy = picks["default"]
    largest = max(cfg["budgets"], key=cfg["budgets"].get)
    keep = {*picks.values(), *((mn, largest) for mn in results)}
    cloud = fit_cloud_rule(train, cfg.get("cloud_max_flagged", 0.005))
    saved = save_wildfire_models(profile, {k: trained[k] for k in keep}, results, tiles, task.norm_entry, task.norm_key,
                                 cfg, picks, cloud=cloud)
    np.savez_compressed(out / "test_predictions.npz", **{f"{mn}__{b}": pt for (mn, b), (_, pt) in probs.items()},
                        labels=test.Y, images=test.X)
    ablation = pretraining_ablation(cfg["pretraining_ablation"], cfg, train, val, test, budgets, results, teacher, seed,
                                    progress, trained=trained, probs=probs) if cfg.get("pretraining_ablation") else None
    metrics = {
        "profile": profile, "sources": cfg["sources"], "sensor": tiles.sensor, "gsd_m": tiles.gsd,
        "pretraining_ablation": ablation,
        "tiles": {"train": len(train), "val": len(val), "test": len(test)},
        "budgets": {b: len(i) for b, i in budgets.items()},
        "test": {mn: {b: {k: r[k] for k in ("precision", "recall", "f1", "iou", "precision_ci95", "recall_ci95", "f1_ci95",
                                             "iou_ci95", "threshold")}
                      | ({"at_precision_target": r["at_precision_target"]} if "at_precision_target" in r else {})
                      for b, r in by.items()} for mn, by in results.items()},
        "val": {mn: {b: r["val"] for b, r in by.items()} for mn, by in results.items()},
        "best": {"model": best_model, "budget": best_budget, "selected_on": "validation F1, budgets <= 10 %",
                 **{k: bm[k] for k in ("precision", "recall", "f1", "iou", "threshold")}},
        "throughput": timings,
        "classical_index": {b: histories[f"classical/{b}"]["index"] for b in budgets} if "classical" in results else {},
        "goal": goal_check(results, small, fm=TEACHER_MODELS, baseline="unet_scratch",
                           best=(best_model, best_budget)),
        "deployed": {"model": deploy[0], "budget": deploy[1], "file": saved["default"],
                     "selected_on": "validation F1 among the students (among every model when no student ran)",
                     **{k: results[deploy[0]][deploy[1]][k] for k in ("precision", "recall", "f1", "iou", "threshold")}},
        "task_models": saved,
        "cloud_rule": cloud,
        "distillation": distillation_block(results, budgets, student["arch"], cfg)
        if student else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    (out / "curves.json").write_text(json.dumps({"pr": curves, "loss": {k: v.get("loss") for k, v in histories.items()}}) + "\n")
    return metrics


def goal_check(results: dict, budgets: list[str], fm: tuple[str, ...], baseline: str, best: tuple[str, str],
               min_precision: float = 0.90, min_f1: float = 0.85, min_margin: float = 0.05) -> dict:
    """The issue's goal, checked on test: the model chosen on validation (budgets <= 10 %) reaches ``min_precision``
    and ``min_f1``; and at each small budget the better foundation-model variant (chosen on validation F1) beats
    the baseline's F1 by ``min_margin``."""
    b = results[best[0]][best[1]]
    margins = {}
    for budget in budgets:
        if baseline in results and any(m in results for m in fm):
            pick = max((m for m in fm if m in results), key=lambda m: results[m][budget]["val"]["f1"])
            margins[budget] = {"fm_model": pick, "fm_f1": results[pick][budget]["f1"],
                               "baseline_f1": results[baseline][budget]["f1"],
                               "margin": results[pick][budget]["f1"] - results[baseline][budget]["f1"]}
    return {"precision_ok": b["precision"] >= min_precision, "f1_ok": b["f1"] >= min_f1,
            "fm_margin_ok": bool(margins) and all(v["margin"] >= min_margin for v in margins.values()),
            "fm_vs_baseline": margins,
            "targets": {"precision": min_precision, "f1": min_f1, "fm_margin": min_margin, "budgets": budgets}}


def model_tag(model_name: str, budget: str) -> str:
    return f"wildfire_{model_name}_{budget.replace('%', 'pct')}"


def save_wildfire_models(profile: str, models: dict, results: dict, tiles: SegTiles, norm_entry: dict, norm_key: str,
                         cfg: dict, picks: dict[str, tuple[str, str]], cloud: dict | None = None) -> dict:
    """Write each (model, budget) as a task model (card + weights) under models/wildfire/, and index.json
    mapping each name of ``picks`` (default, student, teacher, best_val, few_label) to a model; returns that index."""
    from vhrfm.apps.taskmodel import encoder_card, save_task_model
    from vhrfm.data.sources import SOURCES

    out = models_dir(profile) / "wildfire"
    out.mkdir(parents=True, exist_ok=True)
    for (model_name, budget), model in models.items():
        r = results[model_name][budget]
        kind = {"classical": "classical", "unet_scratch": "unet"}.get(model_name, "segmenter")
        card = {
            "task": "wildfire", "name": model_tag(model_name, budget), "model": model_name, "kind": kind, "budget": budget,
            "train_tiles": r["train_tiles"], "positive_class": "burned",
            "bands": [str(b) for b in norm_entry.get("bands", [])] or [f"band{i + 1}" for i in range(len(tiles.wavelengths))],
            "wavelengths": [float(v) for v in tiles.wavelengths], "widths": [float(v) for v in tiles.widths],
            "gsd_m": tiles.gsd, "sensor": tiles.sensor, "tile_size": int(tiles.X.shape[-1]),
            "norm": {"key": norm_key, "mean": [float(v) for v in norm_entry["mean"]], "std": [float(v) for v in norm_entry["std"]]},
            "threshold": r["threshold"], "threshold_chosen_on": "validation (best F1)",
            "test": {k: r[k] for k in ("precision", "recall", "f1", "iou", "f1_ci95")},
            "val": {k: r["val"][k] for k in ("precision", "recall", "f1", "iou")},
            "training": {**{k: cfg[k] for k in ("batch_size", "crop", "lr")},
                         "steps": train_steps(model_name, cfg) if kind == "segmenter" else cfg["steps"],
                         "encoder_lr_scale": encoder_lr_scale(model_name, cfg["encoder_lr_scale"]) if kind == "segmenter"
                         else None},
            "data": [{"source": s, "licence": SOURCES[s].licence, "attribution": SOURCES[s].attribution} for s in cfg["sources"]],
            "profile": profile, "command": f"dvc repro wildfire@{profile}",
            "limits": "trained on one 10 m Sentinel-2 true-colour fire event (EMSR382); VHR use is out of distribution",
        }
        if cloud:
            card["cloud_mask"] = cloud
        if kind == "segmenter":
            card.update(encoder_card(model_name, model))
        save_task_model(out / card["name"], model, card)
    index = {**{k: model_tag(*v) for k, v in picks.items()}, "models": sorted(model_tag(*k) for k in models)}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def scene_labels(item) -> np.ndarray:
    """The full label raster of a segmentation item: 1 / 0, and IGNORE where its ignore raster is set."""
    import rasterio

    from vhrfm.config import data_dir

    with rasterio.open(data_dir() / item.mask) as src:
        y = src.read(1).astype(np.uint8)
    if item.ignore is not None:
        with rasterio.open(data_dir() / item.ignore) as src:
            y[src.read(1) != 0] = IGNORE
    return y


def split_pixels(splits, path: str, shape: tuple[int, int], split: str = "test") -> np.ndarray:
    """Boolean raster of the pixels of ``path`` covered by tiles of ``split`` in the stored split table."""
    sel = np.zeros(shape, bool)
    for r in splits[(splits.path == path) & (splits.split == split)].itertuples():
        sel[r.row_off:r.row_off + r.height, r.col_off:r.col_off + r.width] = True
    return sel


def read_scene_output(mask_path, item) -> tuple[np.ndarray, np.ndarray]:
    """(predicted mask, labels) of one scene: the mask written by ``vhrfm predict`` and :func:`scene_labels`."""
    import rasterio

    y = scene_labels(item)
    with rasterio.open(mask_path) as src:
        pred = src.read(1)
    if pred.shape != y.shape:
        raise ValueError(f"mask {pred.shape} and labels {y.shape} differ")
    return pred, y


def scene_split_confusion(pred: np.ndarray, y: np.ndarray, select: np.ndarray | None = None) -> np.ndarray:
    """(tp, fp, fn, tn) of a whole-scene mask on the labelled pixels in ``select`` (e.g. :func:`split_pixels`;
    ``None``: every labelled pixel of the scene, training ones included)."""
    from vhrfm.apps.segmentation import confusion

    keep = pred != 255 if select is None else (pred != 255) & select
    return confusion((pred == 1).astype(np.float32)[None], np.where(keep, y, IGNORE)[None], 0.5)[0]


def positive_in_ignored(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of the scene's ignored pixels (clouds, smoke, shadow) that the output mask calls positive."""
    ign = y == IGNORE
    return float((pred[ign] == 1).mean()) if ign.any() else 0.0


def run_scene_check(profile: str, progress: bool = False) -> dict:
    """Map every labelled scene whole with the deployed model (the code path of ``vhrfm predict``), score the
    outputs on the test split's pixels, and add the result to ``metrics.json`` under ``"scene"``."""
    from vhrfm.apps.scene import predict_scene
    from vhrfm.apps.segmentation import scores_from_confusion
    from vhrfm.apps.taskmodel import load_task_model
    from vhrfm.config import data_dir
    from vhrfm.data.sources import SOURCES

    p = load_profile(profile)
    res = results_dir(profile)
    out = res / "wildfire"
    index = json.loads((models_dir(profile) / "wildfire" / "index.json").read_text())
    model = load_task_model(models_dir(profile) / "wildfire" / f"{index['default']}.json", task="wildfire")
    splits = load_splits(res / "data" / "splits.csv")
    scenes, total, every = [], np.zeros(4, np.int64), np.zeros(4, np.int64)
    for source in p["wildfire"]["sources"]:
        for it in SOURCES[source].items():
            folder = out / "scenes" / it.group
            s = predict_scene(data_dir() / it.path, model, folder, progress=progress)
            pred, y = read_scene_output(folder / f"{Path(it.path).stem}_mask.tif", it)
            c = scene_split_confusion(pred, y, split_pixels(splits, it.path, y.shape, "test"))
            a = scene_split_confusion(pred, y)
            total += c
            every += a
            px_km2 = s["area_km2"] / max(s["positive_pixels"], 1)  # mean pixel area of this scene
            scenes.append({"scene": it.path, "folder": str(folder.relative_to(res)), "test_pixels": int(c.sum()),
                           "labelled_burned_km2": round(float(a[0] + a[2]) * px_km2, 3),
                           "predicted_burned_km2_on_labelled": round(float(a[0] + a[1]) * px_km2, 3),
                           "positive_fraction_in_ignored": round(positive_in_ignored(pred, y), 4),
                           "cloud_km2": s.get("cloud_km2", 0.0),
                           **{k: s[k] for k in ("width", "height", "area_km2", "polygons", "runtime_s", "mpx_per_s",
                                                "peak_rss_mb", "threshold")}})
    metrics_path = out / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["scene"] = {"model": index["default"], "scenes": scenes,
                        "test_pixels": {k: round(v, 6) for k, v in scores_from_confusion(total).items()},
                        "all_labelled_pixels": {k: round(v, 6) for k, v in scores_from_confusion(every).items()},
                        "what": "whole scenes mapped by `vhrfm predict` code; scored on the test split's labelled pixels, "
                                "and on every labelled pixel (training pixels included: optimistic); area_km2 counts "
                                "every pixel called burned except those the card's cloud rule flags (cloud_km2): "
                                "sea, shadows and thin smoke included"}
    metrics_path.write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics["scene"]


def load_test_predictions(profile: str) -> dict:
    path = results_dir(profile) / "wildfire" / "test_predictions.npz"
    with np.load(path) as z:
        return {k.replace("__", "/"): z[k] for k in z.files}


__all__ = ["MODELS", "load_task", "WildfireTask", "ClassicalIndex", "spectral_indices", "change_indices", "run_wildfire", "load_test_predictions",
           "save_wildfire_models", "fit_cloud_rule", "fit_model", "fit_dense", "score_val_test", "score_probs", "pretraining_ablation", "model_tag", "goal_check",
           "scene_labels", "split_pixels", "read_scene_output", "scene_split_confusion", "positive_in_ignored", "run_scene_check"]
