"""A real sensor pair: the megafauna point-detection task seen by two real sensors.

Domain A is drone photographs of seals degraded to satellite GSD (RGB, ``seals_aerial_drone``); domain B is the
WorldView-3 PAN chips with beluga whales (``beluga_seeker_wv3``). It is the only labelled task of the data
store observed by two real sensors, but the two domains differ in more than the sensor: species (seals on
land, whales in water), background and, on the satellite side, only a handful of labelled animals. A drop
measured here is a sensor *and* scene shift, and its confidence intervals are wide.

Cells of the 2 x 2 matrix (F1 at the model's operating threshold, detections matched within the task radius):

* A -> A: the chapter's cross-domain detector (``megafauna.cross_domain_model``) trained on every degraded
  seal training image, on the degraded seal test split (the megafauna stage's number, recomputed here from
  the saved task model and checked against it);
* A -> B: the same model on the WorldView-3 chips, naive and adapted;
* B -> B: satellite-only training scored leave-one-chip-out (the megafauna stage's number: a chip is only
  ever predicted by a model that did not train on it; its threshold comes from its own training chips);
* B -> A: a detector trained on every WorldView-3 chip (threshold chosen on those chips), on the degraded seal
  test split, naive and adapted.

Adaptation: AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016), the
whole detector's batch-norm statistics re-estimated on the target's unlabeled images (B: the chips
themselves, as test-time adaptation; A: the degraded seal validation images). Thresholds stay those chosen
before adaptation. Drop = in-domain F1 of the target minus the cross F1; ``gap_reduction`` = 1 - mean adapted
drop / mean naive drop, undefined (None) when the naive drop is not positive.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from vhrfm.adapt.crosssensor import reestimate_bn
from vhrfm.config import load_profile, models_dir, results_dir
from vhrfm.data.normalize import load_stats

DOMAINS = ("aerial_seals", "worldview3_whales")


def adabn_detector(net, imgs, batch_size: int = 16):
    """A copy of a dense model whose batch-norm running statistics are re-estimated (cumulative average) on the
    unlabeled images ``imgs`` (a :class:`vhrfm.apps.megafauna.DetImages`); the model itself is left untouched."""
    from vhrfm.apps.megafauna import _bands_for

    wl, wd = torch.from_numpy(imgs.wavelengths), torch.from_numpy(imgs.widths)

    def feed(out):
        for i in range(0, len(imgs), batch_size):
            x = _bands_for(out, imgs, torch.from_numpy(imgs.X[i:i + batch_size]))
            out(x, wl, torch.from_numpy(imgs.gsd[i:i + batch_size]).float(), wd)

    return reestimate_bn(net, feed)


def _f1(net, imgs, thr: float, radius_m: float, n_boot: int, seed: int) -> dict:
    from vhrfm.apps.megafauna import decode, det_metrics, predict_heat, score_detections

    m = det_metrics(score_detections(decode(predict_heat(net, imgs), imgs), imgs, radius_m), thr, n_boot, seed)
    return {k: m[k] for k in ("precision", "recall", "f1", "f1_ci95") if k in m}


def summarise_pair(in_domain: dict, naive: dict, adapted: dict) -> dict:
    """Drops (target's in-domain F1 minus the cross F1) and the gap reduction over the off-diagonal cells."""
    def drops(cells):
        return {k: in_domain[k.split("->")[1]] - v for k, v in cells.items()}

    dn, da = drops(naive), drops(adapted)
    mn, ma = float(np.mean(list(dn.values()))), float(np.mean(list(da.values())))
    return {"drop_naive": dn, "drop_adapted": da, "mean_drop_naive": mn, "mean_drop_adapted": ma,
            "gap_reduction": (1.0 - ma / mn) if mn > 0 else None}


def megafauna_real_pair(profile: str, progress: bool = True) -> dict:
    """The 2 x 2 real-pair matrix of the module docstring, naive and AdaBN; needs the megafauna stage's outputs."""
    from vhrfm.apps.megafauna import (choose_threshold, decode, load_beluga_images, load_seal_images, model_tag,
                                      predict_heat, score_detections, train_detector)
    from vhrfm.apps.taskmodel import load_task_model
    from vhrfm.heads import build_dense_model, encoder_lr_scale

    p = load_profile(profile)
    cfg, seed = p["megafauna"], p["seed"]
    res = results_dir(profile)
    mf = json.loads((res / "megafauna" / "metrics.json").read_text())
    name = cfg["cross_domain_model"]
    largest = max(cfg["budgets"], key=cfg["budgets"].get)
    splits, stats = pd.read_csv(res / "data" / "splits.csv"), load_stats(res / "data" / "norm_stats.json")
    seals = load_seal_images(splits, stats, cfg["degrade"], progress=progress)
    val, test = seals.split("val"), seals.split("test")
    sat = load_beluga_images(stats, splits)
    radius, n_boot = cfg["radius_m"], cfg["n_boot"]
    a, b = DOMAINS

    # A: the saved cross-domain detector trained on every degraded seal training image
    tm = load_task_model(models_dir(profile) / "megafauna" / f"{model_tag(name, largest)}.json", task="megafauna")
    net_a, thr_a = tm.net.eval(), tm.threshold
    aa = _f1(net_a, test, thr_a, radius, n_boot, seed)
    expected = mf["test"][name][largest]["f1"]
    if abs(aa["f1"] - expected) > 1e-6:
        raise RuntimeError(f"the saved {name} model gives seal test F1 {aa['f1']:.6f}, the megafauna stage {expected:.6f}")
    ab_naive = _f1(net_a, sat, thr_a, radius, n_boot, seed)
    ab_adapted = _f1(adabn_detector(net_a, sat), sat, thr_a, radius, n_boot, seed)

    # B: a detector trained on every WorldView-3 chip; its in-domain F1 is the stage's leave-one-chip-out figure
    bb = mf["cross_domain"]["satellite_only"]
    net_b = build_dense_model(name, sat.X.shape[1], models_dir(profile) / "teacher.safetensors", seed)
    train_detector(net_b, [sat], steps=cfg["cross_domain_steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                   sigma_m=cfg["sigma_m"], seed=seed, encoder_lr_scale=encoder_lr_scale(name, cfg["encoder_lr_scale"]),
                   crop=cfg.get("cross_domain_crop"), progress=progress, desc="satellite-only, every chip")
    thr_b = choose_threshold(score_detections(decode(predict_heat(net_b, sat), sat), sat, radius), cfg["min_precision"])
    ba_naive = _f1(net_b, test, thr_b, radius, n_boot, seed)
    ba_adapted = _f1(adabn_detector(net_b, val), test, thr_b, radius, n_boot, seed)

    in_domain = {a: aa["f1"], b: bb["f1"]}
    naive = {f"{a}->{b}": ab_naive["f1"], f"{b}->{a}": ba_naive["f1"]}
    adapted = {f"{a}->{b}": ab_adapted["f1"], f"{b}->{a}": ba_adapted["f1"]}
    return {
        "task": "marine megafauna point detection (F1 within the matching radius)",
        "domains": {a: {"sensor": f"drone RGB degraded to {float(seals.gsd[0]):g} m", "images_test": len(test), "animals_test": test.n_points},
                    b: {"sensor": "WorldView-3 PAN", "gsd_m": sorted({float(g) for g in sat.gsd}), "images": len(sat), "animals": sat.n_points}},
        "model": name, "budget": largest, "method": "adabn",
        "in_domain": in_domain, "naive": naive, "adapted": adapted,
        "cells": {f"{a}->{a}": aa, f"{a}->{b}": {"naive": ab_naive, "adabn": ab_adapted},
                  f"{b}->{b}": {k: bb[k] for k in ("precision", "recall", "f1") if k in bb},
                  f"{b}->{a}": {"naive": ba_naive, "adabn": ba_adapted}},
        "thresholds": {a: thr_a, b: thr_b},
        **summarise_pair(in_domain, naive, adapted),
        "caveat": "one real sensor pair, confounded with a scene shift (seals on land vs whales in water) and "
                  f"only {sat.n_points} labelled whales: a measurement of this pair, not a general sensor result",
    }


__all__ = ["DOMAINS", "adabn_detector", "summarise_pair", "megafauna_real_pair"]
