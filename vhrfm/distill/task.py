"""Task-specific knowledge distillation: a compact student learns a task from the few labels *and* from the
fine-tuned teacher's soft outputs (burned-area probabilities, animal-centre heat-maps).

The soft term is the pixel-wise Bernoulli KL divergence between the teacher's and the student's sigmoid
outputs, the dense-prediction form of Hinton et al.'s soft targets ("Distilling the knowledge in a neural
network", 2015; pixel-wise distillation as in Liu et al., "Structured knowledge distillation for semantic
segmentation", CVPR 2019). It is applied on every training image of the task, labelled under the budget or not:
the teacher's outputs need no labels, so with 1 % of the labels the student still sees the other 99 % of the
images through the teacher. It is zero exactly when the student's probabilities equal the teacher's.

The applications' experiment loops train three variants of the same student architecture at every label
budget: ``student_scratch`` (random initialisation, labels only), ``student_finetuned`` (from the self-supervised
KD weights of :mod:`vhrfm.distill.run`, labels only) and ``student_taskkd`` (from the same weights, labels plus
the teacher's soft outputs). The teacher distilled at a budget is the teacher variant (frozen or fine-tuned
encoder) with the better validation F1 at that budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vhrfm.heads import STUDENT_MODELS, TEACHER_MODELS, train_steps


def bernoulli_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor | None = None,
                      normalise: str = "mean") -> torch.Tensor:
    """KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(student))) over (valid) pixels: their mean
    (``normalise="mean"``, for masks), or their sum over the teacher's probability mass (``"mass"``, for sparse
    heat-maps: like the focal loss's division by the number of centres, it keeps the term's scale independent
    of how much of the image is background)."""
    p = torch.sigmoid(teacher_logits)
    kl = (F.binary_cross_entropy_with_logits(student_logits, p, reduction="none")
          - F.binary_cross_entropy_with_logits(teacher_logits, p, reduction="none"))
    if valid is not None:
        if not valid.any():
            return student_logits.sum() * 0.0
        kl, p = kl[valid], p[valid]
    if normalise == "mean":
        return kl.mean()
    if normalise == "mass":
        return kl.sum() / p.sum().clamp(min=1.0)
    raise ValueError(f"normalise must be 'mean' or 'mass', got {normalise!r}")


def student_spec(profile: str, app_cfg: dict) -> dict:
    """The student an application trains: its registry name, the self-supervised KD weights of it, and its dense
    head's settings (``student_head``: width, skip_levels; empty = the default head)."""
    from vhrfm.config import models_dir

    arch = app_cfg["student"]
    return {"arch": arch, "path": models_dir(profile) / "distill" / f"kd_{arch}.safetensors",
            "head": dict(app_cfg.get("student_head") or {})}


def kd_teacher_choice(results: dict, budget: str) -> str | None:
    """The teacher variant distilled at ``budget``: the one with the better validation F1 (None if none ran)."""
    ran = [m for m in TEACHER_MODELS if budget in results.get(m, {})]
    return max(ran, key=lambda m: results[m][budget]["val"]["f1"]) if ran else None


def check_model_order(models: list[str]) -> None:
    """``student_taskkd`` needs a teacher variant trained before it in the same loop."""
    if "student_taskkd" in models:
        first = models.index("student_taskkd")
        if not any(t in models[:first] for t in TEACHER_MODELS):
            raise ValueError(f"student_taskkd must come after a teacher model ({', '.join(TEACHER_MODELS)}) in the "
                             f"models list, got {models}")


def distillation_block(results: dict, budgets, student_arch: str, cfg: dict | None = None) -> dict:
    """Per budget: the distilled teacher variant and its test F1, each student variant's test F1, and the
    share of the teacher's F1 the task-KD student keeps (``f1_retained``). Given the application's settings ``cfg``,
    the block records the training steps (:func:`vhrfm.heads.train_steps`) of the teachers it distilled and of the
    students, which differ where the profile sets ``student_steps``."""
    out = {}
    for b in budgets:
        t = kd_teacher_choice(results, b)
        if t is None or not any(b in results.get(s, {}) for s in STUDENT_MODELS):
            continue
        row = {"teacher_model": t, "teacher_f1": results[t][b]["f1"]}
        for s in STUDENT_MODELS:
            if b in results.get(s, {}):
                row[f"{s}_f1"] = results[s][b]["f1"]
        if "student_taskkd_f1" in row:
            row["f1_retained"] = row["student_taskkd_f1"] / row["teacher_f1"] if row["teacher_f1"] > 0 else None
        out[b] = row
    steps = {}
    if cfg is not None:
        teacher = sorted({train_steps(r["teacher_model"], cfg) for r in out.values()})
        steps = {"steps": {"teacher": teacher[0] if len(teacher) == 1 else teacher,
                           "student": train_steps("student_taskkd", cfg)}}
    return {"student": student_arch, "by_budget": out, **steps,
            "what": "test F1 at each label budget; the teacher is the variant with the better validation F1"}


def kd_kwargs(name: str, results: dict, trained: dict, budget: str, pool, kd_weight: float) -> dict:
    """Keyword arguments of a training loop for model ``name`` at ``budget``: the teacher to distil, the image pool
    and the weight for ``student_taskkd``; nothing for every other model."""
    if name != "student_taskkd":
        return {}
    t = kd_teacher_choice(results, budget)
    if t is None:
        raise ValueError(f"student_taskkd at {budget}: no teacher model trained at that budget before it")
    return {"kd_teacher": trained[(t, budget)], "kd_pool": pool, "kd_weight": kd_weight}


__all__ = ["bernoulli_kd_loss", "student_spec", "kd_teacher_choice", "check_model_order", "distillation_block", "kd_kwargs"]
