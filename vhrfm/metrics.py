"""Metrics: accuracy with bootstrap confidence intervals, and model efficiency figures."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of a per-sample score (e.g. 0/1 correctness)."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, correct.size, (n_boot, correct.size))
    means = correct[idx].mean(1)
    return (float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2)))


def accuracy_with_ci(y_true, y_pred, n_boot: int = 1000, seed: int = 0) -> dict:
    correct = (np.asarray(y_true) == np.asarray(y_pred)).astype(float)
    lo, hi = bootstrap_ci(correct, n_boot, seed)
    return {"acc": float(correct.mean()), "ci95": [lo, hi], "n": int(correct.size)}


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))
