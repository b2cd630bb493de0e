"""Chapter 4's model comparison, cross-validated over space: does the foundation model beat the U-Net from scratch
when the held-out ground changes, not only on the one test split (53 tiles)?

The test split is left out entirely. The training and validation tiles (their blocks) are dealt into K spatial folds
by :func:`vhrfm.apps.segmentation.block_folds` (whole blocks, stratified by burned share, seeded). For each fold f,
fold f is held out for scoring, fold f+1 (mod K) is the validation fold that chooses the threshold (best F1, as the
chapter), and the other folds are the training pool; each model is trained on the same number of labelled tiles as
the chapter's budget (drawn from the pool by :func:`~vhrfm.apps.segmentation.label_budgets`, as the chapter draws
them) with the chapter's schedule (:func:`vhrfm.apps.wildfire.fit_model`, as the chapter trains them) and scored by
:func:`~vhrfm.apps.wildfire.score_probs`. Every training or validation tile is held out exactly once, so the
folds' confusions also add up to one pooled score (270 tiles in 32 blocks on the cpu profile).

    python scripts/wildfire_cv_study.py --budget 5% --budget 10% --seed 0 --seed 1 \\
        --out results/studies/wildfire_cv.json

Prints a JSON line per (fold, model, budget, seed), then per (model, budget, seed) the mean and standard deviation over
folds and the pooled score, and the paired differences in F1 of the foundation model's variants against the
U-Nets from scratch (mean, a t interval over folds, and on how many folds it is ahead). Needs the profile's outputs
of ``dvc repro`` (splits, normalisation statistics, the teacher). Not a pipeline stage: the ``cpu`` profile is
already over its hour.

``results/studies/wildfire_cv.json`` (committed; not a pipeline output) was written on the cpu profile by the
command above (K = 5, fold seed 0, training seeds 0 and 1; about 47 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

MODELS = ("classical", "unet_scratch", "anyband_unet_scratch", "teacher_frozen", "teacher_unet")
# (foundation model variant, its baseline): the chapter's goal compares teacher_unet with unet_scratch;
# anyband_unet_scratch is teacher_unet's own architecture from random weights
PAIRS = (("teacher_unet", "unet_scratch"), ("teacher_unet", "anyband_unet_scratch"),
         ("teacher_frozen", "unet_scratch"), ("unet_scratch", "classical"))
SCORES = ("precision", "recall", "f1", "iou")


def t_interval(d: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean of ``d`` (None for fewer than two values)."""
    from scipy import stats

    if len(d) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return [float(d.mean() - half), float(d.mean() + half)]


def run(profile: str, k: int, fold_seed: int, budgets: list[str], models: list[str], seeds: list[int],
        progress: bool = False) -> dict:
    from vhrfm.apps.segmentation import block_folds, confusion, label_budgets
    from vhrfm.apps.wildfire import fit_model, load_task, score_probs
    from vhrfm.data.datasets import IGNORE
    from vhrfm.heads import DENSE_MODELS, STUDENT_MODELS

    bad = [m for m in models if m != "classical" and (m not in DENSE_MODELS or m in STUDENT_MODELS)]
    if bad:
        raise ValueError(f"--model {bad[0]!r}: classical or a teacher / from-scratch model of chapter 4 "
                         "(not a student)")
    task = load_task(profile, progress=False)
    cfg, tiles = task.cfg, task.tiles
    if unknown := [b for b in budgets if b not in task.budgets]:
        raise ValueError(f"--budget {unknown[0]!r}: the profile's budgets are {', '.join(task.budgets)}")
    pool_all = tiles.subset(np.flatnonzero(tiles.rows.split.to_numpy() != "test"))
    folds = block_folds(pool_all, k, fold_seed)
    n_labelled = {b: len(task.budgets[b]) for b in budgets}
    blocks = pool_all.rows.assign(fold=folds).groupby("block").fold.first()
    fold_info = []
    for f in range(k):
        sel = folds == f
        lab = pool_all.Y[sel] != IGNORE
        fold_info.append({"fold": f, "tiles": int(sel.sum()), "blocks": int((blocks == f).sum()),
                          "burned_share": float((pool_all.Y[sel][lab] == 1).mean())})
    rows = []
    for f in range(k):
        vf = (f + 1) % k
        held, val = pool_all.subset(np.flatnonzero(folds == f)), pool_all.subset(np.flatnonzero(folds == vf))
        pool = pool_all.subset(np.flatnonzero((folds != f) & (folds != vf)))
        for budget in budgets:
            frac = n_labelled[budget] / len(pool)
            for seed in seeds:
                idx = label_budgets(len(pool), {budget: frac}, seed, masks=pool.Y)[budget]
                sub = pool.subset(idx)
                for model_name in models:
                    t0 = time.perf_counter()
                    _, predict, _ = fit_model(model_name, sub, task, seed, progress=progress,
                                              desc=f"fold {f} {model_name} {budget} seed {seed}")
                    pv, pt = predict(val), predict(held)
                    r = score_probs(pv, val, pt, held, cfg["min_precision"],
                                    precision_target=cfg.get("precision_target"))
                    c = confusion(pt, held.Y, r["threshold"]).sum(0)
                    target = r.get("at_precision_target") or {}
                    row = {"fold": f, "val_fold": vf, "model": model_name, "budget": budget, "labelled_tiles": len(idx),
                           "pool_tiles": len(pool), "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                           "val_f1": r["val"]["f1"], "threshold": r["threshold"], **{k_: r[k_] for k_ in SCORES},
                           "confusion": [int(v) for v in c],
                           **{f"at_target_{k_}": target.get(k_) for k_ in ("precision", "recall", "f1")}}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    return {"profile": profile, "k": k, "fold_seed": fold_seed, "seeds": seeds, "steps": cfg["steps"],
            "labelled_tiles": n_labelled, "folds": fold_info, "block_fold": {str(b): int(f) for b, f in blocks.items()},
            "runs": rows, "summary": summarise(rows), "paired": paired(rows)}


def goal_targets() -> tuple[float, float]:
    """The chapter's goal, (precision, F1), as :func:`vhrfm.apps.wildfire.goal_check` defines it."""
    import inspect

    from vhrfm.apps.wildfire import goal_check

    params = inspect.signature(goal_check).parameters
    return params["min_precision"].default, params["min_f1"].default


def summarise(rows: list[dict]) -> list[dict]:
    """Per (model, budget, seed): each score's mean and standard deviation over folds, the pooled score (the folds'
    confusions summed: every tile held out once), and on how many folds the chapter's goal (:func:`goal_targets`)
    is met."""
    from vhrfm.apps.segmentation import scores_from_confusion

    min_precision, min_f1 = goal_targets()

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["budget"], r["seed"]), []).append(r)
    out = []
    for (model_name, budget, seed), rs in groups.items():
        e = {"model": model_name, "budget": budget, "seed": seed, "folds": len(rs),
             "pooled": scores_from_confusion(np.sum([r["confusion"] for r in rs], axis=0))}
        for k_ in (*SCORES, "val_f1"):
            v = np.array([r[k_] for r in rs], float)
            e[f"{k_}_mean"], e[f"{k_}_sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None
        e["folds_at_goal"] = int(sum(r["precision"] >= min_precision and r["f1"] >= min_f1 for r in rs))
        out.append(e)
    return out


def paired(rows: list[dict], pairs=PAIRS) -> list[dict]:
    """Per pair (model, baseline) of ``pairs``, budget and seed: the F1 difference fold by fold (same held-out
    fold, same labelled tiles), its mean with a t interval over folds, and on how many folds the model is ahead."""
    f1 = {(r["model"], r["budget"], r["seed"], r["fold"]): r["f1"] for r in rows}
    out = []
    for a, b in pairs:
        for budget, seed in sorted({(r["budget"], r["seed"]) for r in rows}):
            folds = sorted(f for (m, bu, s, f) in f1 if (m, bu, s) == (a, budget, seed) and (b, bu, s, f) in f1)
            if not folds:
                continue
            d = np.array([f1[(a, budget, seed, f)] - f1[(b, budget, seed, f)] for f in folds])
            out.append({"model": a, "against": b, "budget": budget, "seed": seed, "f1_diff_per_fold": d.tolist(),
                        "f1_diff_mean": float(d.mean()), "f1_diff_ci95_t": t_interval(d),
                        "folds_ahead": int((d > 0).sum()), "folds": len(d)})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--folds", type=int, default=5, help="K, the number of spatial folds (default 5)")
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--budget", action="append", help="the chapter's budget names (default: 10%%)")
    ap.add_argument("--model", action="append", help=f"default: {', '.join(MODELS)}")
    ap.add_argument("--seed", action="append", type=int, help="training seeds (default: 0)")
    ap.add_argument("--out", type=Path, help="also write everything here (JSON)")
    a = ap.parse_args(argv)
    out = run(a.profile, a.folds, a.fold_seed, a.budget or ["10%"], a.model or list(MODELS), a.seed or [0])
    for s in out["summary"]:
        print(json.dumps(s))
    for p in out["paired"]:
        print(json.dumps(p))
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
