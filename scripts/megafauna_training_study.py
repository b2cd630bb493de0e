"""Chapter 5's training choices, measured one run at a time: is the megafauna gap to the goal one of training length,
of the heat-map's width, or of test-time augmentation?

Each ``--run MODEL,BUDGET,STEPS,LR,SEED[,SIGMA]`` trains one learned detector of chapter 5 (``unet_scratch``,
``teacher_unet``, ...) on the profile's label budget of degraded seal images with
:func:`vhrfm.apps.megafauna.fit_detector` (the profile's schedule with STEPS, LR and the heat-map Gaussian
``sigma_m`` SIGMA put in; the profile's output prior) and scores it with
:func:`~vhrfm.apps.megafauna.score_val_test` as the chapter does: threshold of best validation F1, test precision /
recall / F1 / AP at it, test at the lowest validation threshold reaching the profile's ``precision_target``, and the
WorldView-3 chips at the validation threshold; then scores the same detector again with D4 test-time augmentation
(``predict_heat(..., tta=True)``, what ``vhrfm predict --tta`` does; the ``tta_`` columns, threshold chosen again on
validation). It needs the profile's outputs of ``dvc repro`` (splits,
normalisation statistics, the teacher). A run with the profile's own settings and seed 0 reproduces the chapter's
main-table entry. Students are not run here (they need the main table's teachers).

    python scripts/megafauna_training_study.py --run unet_scratch,100%,600,0.001,0 --run teacher_unet,100%,150,0.001,1

Prints a JSON line per run, then the mean over seeds of each setting; ``--out FILE`` writes them as JSON too.
``seconds`` is the training plus the plain scoring (validation, test, WorldView-3 chips); ``tta_seconds`` the
scoring with TTA only (the same detector, not trained again). Choose settings on the validation columns: the test
columns are the held-out split.

``results/studies/megafauna_training.json`` (committed; not a pipeline output) was written on the cpu profile by
``--run M,100%,150,0.001,S --run M,100%,600,0.001,S`` for M in unet_scratch, anyband_unet_scratch, teacher_unet and
S in 0, 1, with ``--out results/studies/megafauna_training.json`` (before the ``tta_`` columns existed).
``results/studies/megafauna_tta.json`` was written on the cpu profile by ``--run M,100%,150,0.001,S`` for the same
M and S, with ``--out results/studies/megafauna_tta.json``, and ``results/studies/megafauna_tta_600.json`` by
``--run M,100%,600,0.001,S`` with ``--out results/studies/megafauna_tta_600.json``.
``results/studies/megafauna_training_2400.json`` (four times the 600 steps, seed 0 only; about 35 min) by
``--run teacher_unet,100%,2400,0.001,0 --run unet_scratch,100%,2400,0.001,0``
``--out results/studies/megafauna_training_2400.json``.
``results/studies/megafauna_training_2400_twin.json`` (the foundation model against its random-init twin at 2400
steps, seed 0, on the Intel Xeon of 2026-12-05 with that machine's teacher; about 24 min; the record names machine
and commit) by ``--run anyband_unet_scratch,100%,2400,0.001,0 --run teacher_unet,100%,2400,0.001,0``
``--out results/studies/megafauna_training_2400_twin.json``. The 2400-step record before it ran on an AMD EPYC with
that machine's teacher: compare its rows with this one's knowing that another CPU moves them too.
``results/studies/teacher_steps_megafauna.json`` (the teacher at the students' ``student_steps``, seed 0, for
chapter 2's retained share) by ``--run teacher_unet,100%,450,0.001,0 --out results/studies/teacher_steps_megafauna.json``;
``results/studies/teacher_steps_megafauna_seeds.json`` (the same at seeds 1 and 2, with the teachers' own 150 steps at
those seeds beside them) by ``--run teacher_unet,100%,S,0.001,N`` for S in 450, 150 and N in 1, 2, with
``--out results/studies/teacher_steps_megafauna_seeds.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_study.py, however this file is loaded
from _study import mean_over_seeds, study_main  # noqa: E402

SETTING = ("model", "budget", "steps", "lr", "sigma_m")
PLAIN = ("val_f1", "test_precision", "test_recall", "test_f1", "test_ap")
MEANS = (*PLAIN, *(f"tta_{k}" for k in PLAIN))  # the same detector scored plain and with test-time augmentation


def parse_run(spec: str) -> dict:
    """``MODEL,BUDGET,STEPS,LR,SEED[,SIGMA]`` -> its fields (SIGMA None when not given)."""
    parts = spec.split(",")
    if len(parts) not in (5, 6):
        raise ValueError(f"--run {spec!r}: expected MODEL,BUDGET,STEPS,LR,SEED[,SIGMA]")
    return {"model": parts[0], "budget": parts[1], "steps": int(parts[2]), "lr": float(parts[3]), "seed": int(parts[4]),
            "sigma_m": float(parts[5]) if len(parts) == 6 else None}


def run(specs: list[str], profile: str) -> list[dict]:
    from vhrfm.apps.megafauna import (decode, det_metrics, fit_detector, load_task, predict_heat, score_detections,
                                      score_val_test)
    from vhrfm.heads import DENSE_MODELS, STUDENT_MODELS

    runs = [parse_run(s) for s in specs]
    for r in runs:
        if r["model"] not in DENSE_MODELS or r["model"] in STUDENT_MODELS:
            raise ValueError(f"--run {r['model']!r}: a teacher or from-scratch detector of chapter 5 (not classical, "
                             "not a student)")
    task = load_task(profile, progress=False)
    rows = []
    for r0 in runs:
        model_name, budget, seed = r0["model"], r0["budget"], r0["seed"]
        c = dict(task.cfg, steps=r0["steps"], lr=r0["lr"],
                 sigma_m=task.cfg["sigma_m"] if r0["sigma_m"] is None else r0["sigma_m"])
        t0 = time.perf_counter()
        model, history = fit_detector(model_name, task.train.subset(task.budgets[budget]), task.teacher, seed, c,
                                      output_prior=c.get("heatmap_prior"),
                                      desc=f"{model_name} {budget} {c['steps']} steps seed {seed}")
        row = {"model": model_name, "budget": budget, "steps": c["steps"], "lr": c["lr"], "sigma_m": c["sigma_m"],
               "seed": seed, "loss_last10": float(np.mean(history[-10:]))}
        for prefix, tta in (("", False), ("tta_", True)):  # the same detector, plain and with D4 test-time augmentation
            heat = lambda d: predict_heat(model, d, tta=tta)  # noqa: E731
            m, _, _, _ = score_val_test(heat, task.val, task.test, c, seed)
            sat = det_metrics(score_detections(decode(heat(task.sat), task.sat), task.sat, c["radius_m"]),
                              m["threshold"], 0)
            target = m.get("at_precision_target") or {}
            row |= {f"{prefix}seconds": round(time.perf_counter() - t0, 1), f"{prefix}val_f1": m["val"]["f1"],
                    f"{prefix}test_precision": m["precision"], f"{prefix}test_recall": m["recall"],
                    f"{prefix}test_f1": m["f1"], f"{prefix}test_ap": m["ap"], f"{prefix}test_f1_ci95": m["f1_ci95"],
                    **{f"{prefix}at_target_test_{k}": target.get(k) for k in ("precision", "recall", "f1")},
                    **{f"{prefix}satellite_{k}": sat[k] for k in ("precision", "recall", "f1")}}
            t0 = time.perf_counter()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds of each (model, budget, steps, lr, sigma_m)."""
    return mean_over_seeds(rows, SETTING, MEANS)


def main(argv=None) -> None:
    study_main(argv, __doc__, "MODEL,BUDGET,STEPS,LR,SEED[,SIGMA]", run, summarise)


if __name__ == "__main__":
    main()
