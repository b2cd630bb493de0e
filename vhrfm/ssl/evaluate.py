"""Chapter-1 evaluation: probe every encoder and baseline on every task, pick the teacher on val."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from vhrfm.checkpoint import load_encoder
from vhrfm.models import create_encoder
from vhrfm.ssl.probe import FEATURE_SETS, ProbeTask, encoder_features, evaluate_features, pixel_stat_features, rcf_features
from vhrfm.ssl.train import build_objective

BASELINES = ("random_init", "rcf", "pixel_stats")


def random_encoder(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_encoder(arch).eval()


def probe_encoder(encoder, task: ProbeTask, seed: int = 0, n_boot: int = 1000, feature_sets=FEATURE_SETS) -> dict:
    """Probe results of one encoder on one task with the feature set of best *validation* linear accuracy (ties: the
    first of ``feature_sets``); every set's validation and test accuracies are kept under ``by_features``."""
    runs = {fs: evaluate_features(encoder_features(encoder, task, features=fs), task, seed=seed, n_boot=n_boot)
            for fs in feature_sets}
    pick = max(feature_sets, key=lambda fs: (runs[fs]["linear_val_acc"], -feature_sets.index(fs)))
    return {**runs[pick], "features": pick,
            "by_features": {fs: {k: r[k] for k in ("linear_val_acc", "linear_acc", "knn_acc")} for fs, r in runs.items()}}


def probe_all(encoders: dict, tasks: dict[str, ProbeTask], seed: int = 0, n_boot: int = 1000,
              progress: bool = True) -> dict:
    """{task: {method: probe results}} for the given encoders (feature set chosen on validation, see
    :func:`probe_encoder`) plus RCF and pixel statistics."""
    out = {}
    jobs = [(t, m) for t in tasks for m in [*encoders, "rcf", "pixel_stats"]]
    for tname, method in tqdm(jobs, desc="probes", disable=not progress):
        task = tasks[tname]
        if method == "rcf":
            res = evaluate_features(rcf_features(task, seed=seed), task, seed=seed, n_boot=n_boot)
        elif method == "pixel_stats":
            res = evaluate_features(pixel_stat_features(task), task, seed=seed, n_boot=n_boot)
        else:
            res = probe_encoder(encoders[method], task, seed=seed, n_boot=n_boot)
        out.setdefault(tname, {})[method] = res
    return out


def probe_tasks(profile: str) -> tuple[dict[str, ProbeTask], list[str]]:
    """The chapter-1 probe tasks of a profile (usable ones) and the names of those left out."""
    from vhrfm.config import load_profile, results_dir
    from vhrfm.data.datasets import load_splits
    from vhrfm.data.normalize import load_stats
    from vhrfm.ssl.probe import TASKS

    p = load_profile(profile)
    pcfg, seed = p["probe"], p["seed"]
    res = results_dir(profile) / "data"
    splits, stats = load_splits(res / "splits.csv"), load_stats(res / "norm_stats.json")
    tasks = {name: TASKS[name](splits, stats, patch=pcfg[f"{name}_patch"], cap=pcfg["cap"], seed=seed)
             for name in ("aircraft", "seals", "burned")}
    return {n: t for n, t in tasks.items() if t.usable}, [n for n, t in tasks.items() if not t.usable]


def mean_over_tasks(probe: dict, method: str, key: str = "linear_acc") -> float:
    return float(np.mean([probe[t][method][key] for t in probe]))


def select_best(probe: dict, candidates: list[str]) -> str:
    """The candidate with the best mean *validation* linear accuracy (the test split is never used to select)."""
    return max(candidates, key=lambda m: mean_over_tasks(probe, m, "linear_val_acc"))


def load_objective(path):
    """Rebuild a pretraining objective (with decoder / projector) from ``<name>_objective.pt``."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = build_objective(blob["objective"], blob["settings"])
    model.load_state_dict(blob["state"])
    return model.eval()


@torch.no_grad()
def pca_rgb(features: torch.Tensor) -> np.ndarray:
    """(D, h, w) features -> (h, w, 3) image of their first three principal components, stretched to [0, 1]."""
    d, h, w = features.shape
    f = features.reshape(d, -1).T.double()
    f = f - f.mean(0)
    _, _, v = torch.linalg.svd(f, full_matrices=False)
    p = (f @ v[:3].T).numpy()
    lo, hi = np.percentile(p, 2, axis=0), np.percentile(p, 98, axis=0)
    return np.clip((p - lo) / np.maximum(hi - lo, 1e-9), 0, 1).reshape(h, w, 3)


__all__ = ["BASELINES", "random_encoder", "probe_tasks", "probe_encoder", "probe_all", "mean_over_tasks", "select_best", "load_objective", "pca_rgb",
           "load_encoder"]
