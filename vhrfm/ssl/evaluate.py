"""Chapter-1 evaluation: probe every encoder and baseline on every task, pick the teacher on val."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from vhrfm.checkpoint import load_encoder
from vhrfm.models import create_encoder
from vhrfm.ssl.probe import (FEATURE_SETS, ProbeTask, encoder_features, evaluate_features, level_features,
                              pixel_stat_features, rcf_features)
from vhrfm.ssl.summary import mean_over_tasks, mean_rank, pooled_acc, pooled_rank  # noqa: F401 (re-exported)
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
            "by_features": {fs: {k: r[k] for k in ("linear_val_acc", "linear_acc", "knn_acc", "effective_rank", "dim")}
                            for fs, r in runs.items()}}


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


def probe_levels(encoders: dict, tasks: dict[str, ProbeTask], seed: int = 0, n_boot: int = 1000,
                 progress: bool = True) -> dict:
    """Which depth of an encoder the probe accuracy comes from: every level of its feature pyramid probed on its own
    (:func:`vhrfm.ssl.probe.level_features`; linear probe, C chosen on validation, as in :func:`probe_all`).

    Returns ``{"per_task": {task: {method: {"stride", "dim", "linear_acc", "linear_val_acc", "ci95"}}}`` (lists, one
    entry per level, fine to coarse) and ``"mean": {method: [test accuracy per level, mean over the tasks]}``, with
    the levels' strides (``"stride": {method: [...]}``)."""
    per_task = {}
    for tname, method in tqdm([(t, m) for t in tasks for m in encoders], desc="probes per level", disable=not progress):
        rows = [(evaluate_features(f, tasks[tname], seed=seed, n_boot=n_boot), f.shape[1], st)
                for f, st in level_features(encoders[method], tasks[tname])]
        per_task.setdefault(tname, {})[method] = {
            "stride": [st for _, _, st in rows], "dim": [int(d) for _, d, _ in rows],
            "linear_acc": [r["linear_acc"] for r, _, _ in rows], "linear_val_acc": [r["linear_val_acc"] for r, _, _ in rows],
            "ci95": [r["ci95"] for r, _, _ in rows]}
    mean, stride = {}, {}
    for method in encoders:
        got = [per_task[t][method] for t in tasks]
        if any(g["stride"] != got[0]["stride"] for g in got):
            raise ValueError(f"{method}: its levels' strides differ between tasks: {[g['stride'] for g in got]}")
        stride[method] = got[0]["stride"]
        mean[method] = [float(np.mean([g["linear_acc"][i] for g in got])) for i in range(len(stride[method]))]
    return {"per_task": per_task, "mean": mean, "stride": stride}


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


def select_best(probe: dict, candidates: list[str]) -> str:
    """The candidate with the best mean *validation* linear accuracy (the test split is never used to select)."""
    return max(candidates, key=lambda m: mean_over_tasks(probe, m, "linear_val_acc"))


def _spread(values: dict) -> dict:
    v = np.array(list(values.values()), dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def seed_study(pretrained: dict[int, object], arch: str, tasks: dict[str, ProbeTask], probe: dict, method: str,
               random_method: str, main_seed: int = 0, n_boot: int = 1000, progress: bool = True) -> dict:
    """Chapter 1's margins over training seeds, so that a margin is not read off one run.

    ``pretrained``: {training seed: encoder} of one method; at every seed, the random-init encoder of ``arch``
    (``random_encoder(arch, seed)``) and RCF (``rcf_features(seed=seed)``) are probed alongside. The probe itself
    (validation split, C, bootstrap) keeps ``main_seed``, so only the training seed varies. The main seed's
    three results are taken from ``probe`` (the main table: ``method``, ``random_method``, ``"rcf"``), not
    recomputed. Accuracies are test linear-probe accuracies averaged over the tasks, as in the main table."""
    seeds = sorted(pretrained)
    if main_seed not in seeds:
        raise ValueError(f"the seed study must include the main seed {main_seed} (its results come from the main table)")
    kinds = ("pretrained", "random_init", "rcf")
    per_task = {t: {k: {} for k in kinds} for t in tasks}
    pooled_per_task = {t: {k: {} for k in kinds[:2]} for t in tasks}  # RCF has one feature set
    rank_per_task = {t: {k: {} for k in kinds} for t in tasks}
    jobs = [(s, t) for s in seeds for t in tasks]
    for s, t in tqdm(jobs, desc="seed study", disable=not progress):
        task = tasks[t]
        if s == main_seed:
            got = {"pretrained": probe[t][method], "random_init": probe[t][random_method], "rcf": probe[t]["rcf"]}
        else:
            got = {"pretrained": probe_encoder(pretrained[s], task, seed=main_seed, n_boot=n_boot),
                   "random_init": probe_encoder(random_encoder(arch, s), task, seed=main_seed, n_boot=n_boot),
                   "rcf": evaluate_features(rcf_features(task, seed=s), task, seed=main_seed, n_boot=n_boot)}
        for k in kinds:
            per_task[t][k][str(s)] = float(got[k]["linear_acc"])
            rank_per_task[t][k][str(s)] = pooled_rank(got[k])
            if k in pooled_per_task[t]:
                pooled_per_task[t][k][str(s)] = pooled_acc(got[k])
    mean_acc = {k: {str(s): float(np.mean([per_task[t][k][str(s)] for t in tasks])) for s in seeds} for k in kinds}
    pooled_mean = {k: {str(s): float(np.mean([pooled_per_task[t][k][str(s)] for t in tasks])) for s in seeds}
                   for k in kinds[:2]}
    mean_rank_ = {k: {str(s): float(np.mean([rank_per_task[t][k][str(s)] for t in tasks])) for s in seeds} for k in kinds}
    spread = {k: _spread(mean_acc[k]) for k in kinds}
    pixel = float(np.mean([probe[t]["pixel_stats"]["linear_acc"] for t in tasks]))

    def margin(base: str) -> dict:
        pairs = [100 * (a - b) for a in mean_acc["pretrained"].values() for b in mean_acc[base].values()]
        return {"mean": 100 * (spread["pretrained"]["mean"] - spread[base]["mean"]),
                "worst_pair": float(min(pairs)), "best_pair": float(max(pairs))}

    return {"method": method, "arch": arch, "seeds": seeds, "main_seed": main_seed,
            "linear_acc": mean_acc, "per_task": per_task, "spread": spread, "pixel_stats_linear_acc": pixel,
            "effective_rank": mean_rank_, "effective_rank_per_task": rank_per_task,
            # the final map average-pooled, whichever set the probe chose (the usual linear evaluation)
            "pooled": {"linear_acc": pooled_mean, "per_task": pooled_per_task,
                       "spread": {k: _spread(v) for k, v in pooled_mean.items()}},
            "margin_vs_random_points": margin("random_init"), "margin_vs_rcf_points": margin("rcf"),
            "margin_vs_pixel_stats_points": 100 * (spread["pretrained"]["mean"] - pixel)}


def learning_curve(snapshots: dict[int, dict[int, object]], tasks: dict[str, ProbeTask], study: dict, steps: int,
                   main_seed: int = 0, n_boot: int = 1000, progress: bool = True) -> dict:
    """Frozen-feature accuracy of the seed study's method along its training: is its deficit a matter of steps?

    ``snapshots``: {training seed: {step: encoder after that many steps}} (``pretrain``'s ``snapshots``).
    Step 0 is the initialisation, which is the random-init encoder of the seed study at that seed
    (``random_encoder(arch, seed)``: the same draws, checked by the tests), and step ``steps`` is the trained
    encoder; both come from ``study`` (:func:`seed_study`), not recomputed. The probe keeps ``main_seed``, as in the
    seed study. Accuracies are test linear-probe accuracies averaged over the tasks (and per task)."""
    seeds = [int(s) for s in study["seeds"]]
    if sorted(snapshots) != seeds:
        raise ValueError(f"snapshots cover seeds {sorted(snapshots)}, the seed study {seeds}")
    inner = sorted({k for by in snapshots.values() for k in by})
    if any(sorted(by) != inner for by in snapshots.values()):
        raise ValueError("every seed needs the same snapshot steps")
    if any(k <= 0 or k >= steps for k in inner):
        raise ValueError(f"snapshot steps {inner} must lie strictly between 0 and {steps}")
    grid = [0, *inner, steps]
    per_task = {t: {str(s): {} for s in seeds} for t in tasks}
    pooled_per_task = {t: {str(s): {} for s in seeds} for t in tasks}
    rank_per_task = {t: {str(s): {} for s in seeds} for t in tasks}
    for t in tasks:
        for s in seeds:
            for k, kind in ((0, "random_init"), (steps, "pretrained")):
                per_task[t][str(s)][str(k)] = study["per_task"][t][kind][str(s)]
                pooled_per_task[t][str(s)][str(k)] = study["pooled"]["per_task"][t][kind][str(s)]
                rank_per_task[t][str(s)][str(k)] = study["effective_rank_per_task"][t][kind][str(s)]
    jobs = [(s, k, t) for s in seeds for k in inner for t in tasks]
    for s, k, t in tqdm(jobs, desc="learning curve", disable=not progress):
        res = probe_encoder(snapshots[s][k], tasks[t], seed=main_seed, n_boot=n_boot)
        per_task[t][str(s)][str(k)] = float(res["linear_acc"])
        pooled_per_task[t][str(s)][str(k)] = pooled_acc(res)
        rank_per_task[t][str(s)][str(k)] = pooled_rank(res)

    def over_tasks(table: dict) -> dict:
        return {str(s): {str(k): float(np.mean([table[t][str(s)][str(k)] for t in tasks])) for k in grid} for s in seeds}

    def by_step_of(acc: dict) -> dict:
        return {str(k): _spread({s: acc[str(s)][str(k)] for s in seeds}) for k in grid}

    mean_acc, pooled_mean, rank = over_tasks(per_task), over_tasks(pooled_per_task), over_tasks(rank_per_task)
    by_step, pooled_by_step = by_step_of(mean_acc), by_step_of(pooled_mean)
    best = max(grid, key=lambda k: by_step[str(k)]["mean"])
    return {"method": study["method"], "seeds": seeds, "steps": grid, "linear_acc": mean_acc, "per_task": per_task,
            "by_step": by_step, "best_step": best, "effective_rank": rank,
            # the same snapshots read through their final map alone (average-pooled)
            "pooled": {"linear_acc": pooled_mean, "per_task": pooled_per_task, "by_step": pooled_by_step,
                       "final_minus_init_points": 100 * (pooled_by_step[str(steps)]["mean"] - pooled_by_step["0"]["mean"])},
            "effective_rank_by_step": {str(k): _spread({s: rank[str(s)][str(k)] for s in seeds}) for k in grid},
            "final_minus_init_points": 100 * (by_step[str(steps)]["mean"] - by_step["0"]["mean"]),
            "final_minus_best_points": 100 * (by_step[str(steps)]["mean"] - by_step[str(best)]["mean"])}


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


__all__ = ["BASELINES", "pooled_rank", "mean_rank", "random_encoder", "probe_tasks", "probe_encoder", "probe_all", "mean_over_tasks", "select_best", "load_objective", "pca_rgb",
           "load_encoder"]
