"""Chapter 4's training choices, measured one run at a time: is the wildfire gap to the goal one of training length,
learning rate or loss?

Each ``--run MODEL,BUDGET,STEPS,LR,SEED[,DICE]`` trains one dense model of chapter 4 (``unet_scratch``,
``teacher_unet``, ...) on the profile's label budget with :func:`vhrfm.apps.wildfire.fit_dense` (the profile's
schedule with STEPS, LR and ``dice_weight`` DICE put in) and scores it with :func:`~vhrfm.apps.wildfire.score_probs`
as the chapter does: threshold of best validation F1, test precision / recall / F1 at it, and test at the lowest
validation threshold reaching the profile's ``precision_target``. It needs the profile's outputs of ``dvc repro``
(splits, normalisation statistics, the teacher). A run with the profile's own settings and seed 0 reproduces the
chapter's main-table entry.

    python scripts/wildfire_training_study.py --run unet_scratch,10%,240,0.001,1 --run teacher_unet,10%,80,0.001,0,1

Prints a JSON line per run, then the mean over seeds of each setting; ``--out FILE`` writes them as JSON too.
Choose settings on the validation columns: the test columns are the held-out split.

``results/studies/wildfire_training.json`` (committed; not a pipeline output) was written on the cpu profile by
``--run M,10%,80,0.001,S --run M,10%,240,0.001,S --run M,10%,80,0.001,S,1`` for M in unet_scratch, teacher_unet
and S in 0, 1, 2, with ``--out results/studies/wildfire_training.json``.
``results/studies/teacher_steps_wildfire.json`` (the teacher at the students' ``student_steps``, for chapter 2's
retained share; seed 0 at 80 steps is the chapter's own entry) by ``--run teacher_unet,100%,240,0.001,0 --run
teacher_unet,100%,240,0.001,1 --run teacher_unet,100%,80,0.001,1 --out results/studies/teacher_steps_wildfire.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_study.py, however this file is loaded
from _study import mean_over_seeds, study_main  # noqa: E402

SETTING = ("model", "budget", "steps", "lr", "dice_weight")
MEANS = ("val_f1", "test_precision", "test_recall", "test_f1")


def parse_run(spec: str) -> dict:
    """``MODEL,BUDGET,STEPS,LR,SEED[,DICE]`` -> its fields (DICE None when not given)."""
    parts = spec.split(",")
    if len(parts) not in (5, 6):
        raise ValueError(f"--run {spec!r}: expected MODEL,BUDGET,STEPS,LR,SEED[,DICE]")
    return {"model": parts[0], "budget": parts[1], "steps": int(parts[2]), "lr": float(parts[3]), "seed": int(parts[4]),
            "dice_weight": float(parts[5]) if len(parts) == 6 else None}


def run(specs: list[str], profile: str) -> list[dict]:
    from vhrfm.apps.segmentation import predict_probs
    from vhrfm.apps.wildfire import fit_dense, load_task, score_probs

    runs = [parse_run(s) for s in specs]
    task = load_task(profile, progress=False)
    cfg, train, val, test, budgets, teacher = task.cfg, task.train, task.val, task.test, task.budgets, task.teacher
    rows = []
    for r0 in runs:
        model_name, budget, seed = r0["model"], r0["budget"], r0["seed"]
        c = dict(cfg, steps=r0["steps"], lr=r0["lr"],
                 dice_weight=cfg.get("dice_weight", 0.0) if r0["dice_weight"] is None else r0["dice_weight"])
        t0 = time.perf_counter()
        model, history = fit_dense(model_name, train.subset(budgets[budget]), teacher, seed, c,
                                   desc=f"{model_name} {budget} {c['steps']} steps seed {seed}")
        r = score_probs(predict_probs(model, val), val, predict_probs(model, test), test, cfg["min_precision"],
                        precision_target=cfg.get("precision_target"))
        target = r.get("at_precision_target") or {}
        row = {"model": model_name, "budget": budget, "steps": c["steps"], "lr": c["lr"], "dice_weight": c["dice_weight"],
               "seed": seed, "seconds": round(time.perf_counter() - t0, 1), "val_f1": r["val"]["f1"],
               "test_precision": r["precision"], "test_recall": r["recall"], "test_f1": r["f1"],
               "loss_last10": float(np.mean(history[-10:])),
               **{f"at_target_test_{k}": target.get(k) for k in ("precision", "recall", "f1")}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds of each (model, budget, steps, lr, dice_weight)."""
    return mean_over_seeds(rows, SETTING, MEANS)


def main(argv=None) -> None:
    study_main(argv, __doc__, "MODEL,BUDGET,STEPS,LR,SEED[,DICE]", run, summarise)


if __name__ == "__main__":
    main()
