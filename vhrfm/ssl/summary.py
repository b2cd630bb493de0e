"""Chapter 1's readings of a probe table (``{task: {method: result}}``, as the probe writes it and as
``results/pretraining/metrics.json`` keeps it): a method's accuracy averaged over the tasks, through the feature set
the probe chose or through the pooled final map alone. The probe, the notebook, the distillation chapter and the paper
read the table through these; numpy only, so that the paper does not import the probe."""

from __future__ import annotations

import numpy as np


def pooled_rank(result: dict, key: str = "effective_rank") -> float:
    """Effective rank (``key="dim"``: width) of the pooled features' training rows behind a probe result (RCF and
    pixel statistics have one feature set; an encoder's result keeps every set under ``by_features``)."""
    return float(result["by_features"]["pooled"][key] if "by_features" in result else result[key])


def pooled_acc(result: dict) -> float:
    """Test linear accuracy of an encoder's ``pooled`` feature set (the final map, average-pooled: the usual linear
    evaluation of self-supervised features), whichever set the probe chose (:func:`pooled_rank`'s reading)."""
    return pooled_rank(result, "linear_acc")


def mean_over_tasks(probe: dict, method: str, key: str = "linear_acc") -> float:
    """``method``'s ``key`` (test linear accuracy by default; ``linear_val_acc`` for validation) averaged over the
    tasks of ``probe``, each through the feature set the probe chose on validation."""
    return float(np.mean([probe[t][method][key] for t in probe]))


def mean_pooled_acc(probe: dict, method: str) -> float:
    """``method``'s test linear accuracy through the pooled final map alone (:func:`pooled_acc`), averaged over the
    tasks of ``probe``."""
    return float(np.mean([pooled_acc(probe[t][method]) for t in probe]))


def mean_rank(probe: dict, method: str) -> float:
    """A method's effective rank (:func:`pooled_rank`) averaged over the tasks."""
    return float(np.mean([pooled_rank(probe[t][method]) for t in probe]))


__all__ = ["pooled_rank", "pooled_acc", "mean_over_tasks", "mean_pooled_acc", "mean_rank"]
