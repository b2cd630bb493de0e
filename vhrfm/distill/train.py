"""Stage ``distill``: self-supervised KD of the teacher into each student, and the same students trained with SSL
from scratch for the same steps, on the unlabeled pretraining corpus (:mod:`vhrfm.distill.kd`)."""

from __future__ import annotations

import json
import time

from vhrfm.config import load_profile, models_dir
from vhrfm.data.sources import SOURCES
from vhrfm.ssl.run import corpus_for, method_config
from vhrfm.ssl.train import pretrain


def kd_config(profile: str, student: str, objective: str) -> dict:
    """Pretraining settings of the profile with the distillation section's overrides, for one student."""
    d = load_profile(profile)["distill"]
    _, base = method_config(profile, next(iter(load_profile(profile)["pretrain"]["methods"])))
    cfg = {**base, "encoder": student, "steps": d["steps"], "batch_size": d["batch_size"], "crop": d["crop"], "lr": d["lr"],
           "warmup_steps": d["warmup_steps"], "ckpt_every": d["steps"], "log_every": max(1, d["steps"] // 20)}
    if objective == "distill":
        cfg.update(teacher=str(models_dir(profile) / "teacher.safetensors"), cos_weight=d["cos_weight"],
                   rel_weight=d["rel_weight"])
    return cfg


def drop_teacher(objective_path) -> None:
    """Rewrite a KD objective's saved state without the frozen teacher's weights (already saved as the teacher)."""
    import torch

    obj = torch.load(objective_path, map_location="cpu", weights_only=False)
    obj["state"] = {k: v for k, v in obj["state"].items() if not k.startswith("teacher.")}
    torch.save(obj, objective_path)


def train_students(profile: str, progress: bool = True) -> dict:
    """Self-supervised KD and SSL-from-scratch of every student; writes models/distill/ with training.json."""
    p = load_profile(profile)
    d, seed = p["distill"], p["seed"]
    out_models = models_dir(profile) / "distill"
    t0 = time.perf_counter()
    corpus, stats = corpus_for(profile, progress)
    used = {pc.key for pc in corpus.products}
    extra = {"training_data": [{"source": s.id, "licence": s.licence, "attribution": s.attribution}
                               for s in SOURCES.values() if any(k.startswith(s.id + "/") for k in used)],
             "normalisation": {k: {f: stats[k][f] for f in ("sensor", "bands", "wavelengths", "mean", "std")} for k in sorted(used)},
             "command": f"dvc repro distill@{profile}"}
    runs = {}
    for student in d["students"]:
        for kind, objective in (("kd", "distill"), ("ssl", "contrastive")):
            name = f"{kind}_{student}"
            runs[name] = pretrain(name, objective, kd_config(profile, student, objective), corpus, out_models, seed=seed,
                                  card_extra={**extra, "distilled_from": "teacher" if kind == "kd" else None},
                                  progress=progress)
            if kind == "kd":
                drop_teacher(out_models / f"{name}_objective.pt")
    summary = {"profile": profile, "students": list(d["students"]), "training_seconds": round(time.perf_counter() - t0, 1),
               "runs": {n: {k: r[k] for k in ("steps", "final_loss", "seconds_this_run")} for n, r in runs.items()}}
    (out_models / "training.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=float) + "\n")
    return summary



__all__ = ["train_students", "kd_config", "drop_teacher"]
