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

Every image is normalised with its own source's statistics (the megafauna stage's inputs), so ``naive`` here
is the simulated matrix's ``own_norm``. Methods (:data:`METHODS`), each on the target's *unlabeled* adaptation
images (B: the chips themselves, as test-time adaptation; A: the degraded seal validation images), all with the
thresholds chosen before adaptation and settings fixed beforehand (those of the simulated matrix):

* ``hist_match``: the classical baseline, each target band's values quantile-mapped onto the pooled values of
  the source's training images (valid pixels);
* ``adabn``: AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016), the
  whole detector's batch-norm statistics re-estimated on the target;
* ``adabn_tent``: AdaBN, then TENT (Wang et al., ICLR 2021): the batch-norm scales and shifts optimised to
  minimise the mean binary entropy of the heat-map over the target's valid pixels.

Drop = in-domain F1 of the target minus the cross F1; ``gap_reduction`` = 1 - mean adapted drop / mean naive
drop, undefined (None) when the naive drop is not positive. A cross F1 above the target's own in-domain F1 gives a
negative drop, which the mean lets offset the other direction's drop: with a weak in-domain reference (the
satellite detector trained on a dozen whales) that inflates the reduction. ``gap_reduction_clipped`` floors each
drop at zero, and ``gap_reduction_by_direction`` gives each direction's own reduction. The chapter's goal is judged on the method named
beforehand (``multisensor.adapted_method`` in ``params.yaml``), not on the best of the table.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from vhrfm.adapt.crosssensor import TENT, binary_entropy, reestimate_bn, tent_bn_affine
from vhrfm.config import load_profile, models_dir, results_dir
from vhrfm.data.normalize import load_stats

DOMAINS = ("aerial_seals", "worldview3_whales")
METHODS = ("naive", "hist_match", "adabn", "adabn_tent")
# the simulated matrix's name of each method (params.yaml: multisensor.adapted_method)
SIMULATED_NAME = {"naive": "own_norm", "hist_match": "hist_match", "adabn": "own_norm_adabn",
                  "adabn_tent": "own_norm_adabn_tent"}


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


def hist_match_images(imgs, adapt, source, n_q: int = 101):
    """A copy of ``imgs`` whose bands are quantile-mapped (valid pixels only) from the distribution of the target's
    unlabeled ``adapt`` images onto the pooled bands of the ``source`` images; padding stays 0."""
    import dataclasses

    q = np.linspace(0, 1, n_q)
    src = np.quantile(source.X.transpose(1, 0, 2, 3)[:, source.valid], q)  # pooled over the source's bands
    X = imgs.X.copy()
    for b in range(X.shape[1]):
        tq = np.quantile(adapt.X[:, b][adapt.valid], q)
        X[:, b] = np.where(imgs.valid, np.interp(imgs.X[:, b], tq, src), 0.0)
    return dataclasses.replace(imgs, X=X.astype(np.float32))


def tent_detector(net, imgs, steps: int = TENT["steps"], lr: float = TENT["lr"], batch_size: int = 16, seed: int = 0):
    """TENT (:func:`vhrfm.adapt.crosssensor.tent_bn_affine`) on a dense detector: the mean binary entropy of its
    heat-map over the valid pixels of the unlabeled images ``imgs`` is minimised. Returns an adapted copy."""
    from vhrfm.apps.megafauna import _bands_for

    rng = np.random.default_rng(seed)
    wl, wd = torch.from_numpy(imgs.wavelengths), torch.from_numpy(imgs.widths)

    def objective(out):
        idx = rng.integers(0, len(imgs), min(batch_size, len(imgs)))
        x = _bands_for(out, imgs, torch.from_numpy(imgs.X[idx]))
        logit = out(x, wl, torch.from_numpy(imgs.gsd[idx]).float(), wd)[:, 0]
        v = torch.from_numpy(imgs.valid[idx]).float()
        return (binary_entropy(logit) * v).sum() / v.sum().clamp(min=1.0)

    return tent_bn_affine(net, objective, steps, lr)


def adapted_cells(net, source, adapt, test, thr: float, radius_m: float, n_boot: int, seed: int) -> dict:
    """F1 cells of every method of :data:`METHODS` for ``net`` (trained on ``source``) on the target's ``test``
    images, adapting on its unlabeled ``adapt`` images."""
    bn = adabn_detector(net, adapt)
    return {"naive": _f1(net, test, thr, radius_m, n_boot, seed),
            "hist_match": _f1(net, hist_match_images(test, adapt, source), thr, radius_m, n_boot, seed),
            "adabn": _f1(bn, test, thr, radius_m, n_boot, seed),
            "adabn_tent": _f1(tent_detector(bn, adapt, seed=seed), test, thr, radius_m, n_boot, seed)}


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
    cn, ca = (float(np.mean([max(v, 0.0) for v in d.values()])) for d in (dn, da))
    return {"drop_naive": dn, "drop_adapted": da, "mean_drop_naive": mn, "mean_drop_adapted": ma,
            "gap_reduction": (1.0 - ma / mn) if mn > 0 else None,
            "gap_reduction_clipped": (1.0 - ca / cn) if cn > 0 else None,
            "gap_reduction_by_direction": {k: (1.0 - da[k] / dn[k]) if dn[k] > 0 else None for k in dn}}


def method_for(adapted_method: str) -> str:
    """The real-pair method that stands for the simulated matrix's ``adapted_method``."""
    inverse = {v: k for k, v in SIMULATED_NAME.items()}
    if adapted_method not in inverse:
        raise ValueError(f"multisensor.adapted_method {adapted_method!r} has no real-pair counterpart; "
                         f"expected one of {sorted(inverse)}")
    return inverse[adapted_method]


def megafauna_real_pair(profile: str, progress: bool = True) -> dict:
    """The 2 x 2 real-pair matrix of the module docstring for every method; needs the megafauna stage's outputs."""
    from vhrfm.apps.megafauna import (choose_threshold, decode, load_beluga_images, load_seal_images, model_tag,
                                      predict_heat, score_detections, train_detector)
    from vhrfm.apps.taskmodel import load_task_model
    from vhrfm.heads import build_dense_model, encoder_lr_scale

    p = load_profile(profile)
    cfg, seed = p["megafauna"], p["seed"]
    adapted = method_for(p["multisensor"]["adapted_method"])
    res = results_dir(profile)
    mf = json.loads((res / "megafauna" / "metrics.json").read_text())
    name = cfg["cross_domain_model"]
    largest = max(cfg["budgets"], key=cfg["budgets"].get)
    splits, stats = pd.read_csv(res / "data" / "splits.csv"), load_stats(res / "data" / "norm_stats.json")
    seals = load_seal_images(splits, stats, cfg["degrade"], progress=progress)
    train, val, test = seals.split("train"), seals.split("val"), seals.split("test")
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
    ab = adapted_cells(net_a, train, sat, sat, thr_a, radius, n_boot, seed)

    # B: a detector trained on every WorldView-3 chip; its in-domain F1 is the stage's leave-one-chip-out figure
    bb = mf["cross_domain"]["satellite_only"]
    net_b = build_dense_model(name, sat.X.shape[1], models_dir(profile) / "teacher.safetensors", seed,
                              output_prior=cfg.get("heatmap_prior"))
    train_detector(net_b, [sat], steps=cfg["cross_domain_steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                   sigma_m=cfg["sigma_m"], seed=seed, encoder_lr_scale=encoder_lr_scale(name, cfg["encoder_lr_scale"]),
                   crop=cfg.get("cross_domain_crop"), progress=progress, desc="satellite-only, every chip")
    thr_b = choose_threshold(score_detections(decode(predict_heat(net_b, sat), sat), sat, radius), cfg["min_precision"])
    ba = adapted_cells(net_b, sat, val, test, thr_b, radius, n_boot, seed)

    in_domain = {a: aa["f1"], b: bb["f1"]}
    cross = {m: {f"{a}->{b}": ab[m]["f1"], f"{b}->{a}": ba[m]["f1"]} for m in METHODS}
    methods = {m: {"f1": cross[m], **{k: v for k, v in summarise_pair(in_domain, cross["naive"], cross[m]).items()
                                      if k in ("drop_adapted", "mean_drop_adapted", "gap_reduction",
                                               "gap_reduction_clipped", "gap_reduction_by_direction")}}
               for m in METHODS}
    return {
        "task": "marine megafauna point detection (F1 within the matching radius)",
        "domains": {a: {"sensor": f"drone RGB degraded to {float(seals.gsd[0]):g} m", "images_test": len(test), "animals_test": test.n_points},
                    b: {"sensor": "WorldView-3 PAN", "gsd_m": sorted({float(g) for g in sat.gsd}), "images": len(sat), "animals": sat.n_points}},
        "model": name, "budget": largest, "method": adapted, "methods_order": list(METHODS),
        "in_domain": in_domain, "naive": cross["naive"], "adapted": cross[adapted], "methods": methods,
        "cells": {f"{a}->{a}": aa, f"{a}->{b}": ab,
                  f"{b}->{b}": {k: bb[k] for k in ("precision", "recall", "f1") if k in bb},
                  f"{b}->{a}": ba},
        "thresholds": {a: thr_a, b: thr_b},
        **summarise_pair(in_domain, cross["naive"], cross[adapted]),
        "caveat": "one real sensor pair, confounded with a scene shift (seals on land vs whales in water) and "
                  f"only {sat.n_points} labelled whales: a measurement of this pair, not a general sensor result",
    }


__all__ = ["DOMAINS", "METHODS", "SIMULATED_NAME", "adabn_detector", "hist_match_images", "tent_detector",
           "adapted_cells", "summarise_pair", "method_for", "megafauna_real_pair"]
