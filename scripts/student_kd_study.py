"""Chapter 2's accuracy goal over training seeds: does a compact student keep >= 95 % of the teacher's F1 on each
task, and is one student's margin over another more than a seed's worth?

Each ``--run TASK,STUDENT,SEED[,STEPS[,KD_WEIGHT]]`` trains ``student_taskkd`` of STUDENT (a registry name; its self-supervised KD
weights ``models/distill/kd_<STUDENT>.safetensors`` from the ``distill`` stage) on TASK's (``wildfire`` or
``megafauna``) largest label budget, as the application does: the teacher variant the chapter distilled at that
budget (``results/<task>/metrics.json`` ``distillation``), loaded from the task model the chapter saved
(``models/<task>/<task>_<teacher>_<budget>.safetensors``); every training image as the KD pool; the task's schedule,
``kd_weight``, ``student_head`` and student's steps (``student_steps``, else ``steps``: STEPS, when given,
replaces them, the same schedule longer or shorter; KD_WEIGHT, when given, replaces ``kd_weight``, the weight of the
teacher's soft outputs against the labels' loss; 0 trains on the labels alone); the task's threshold rule on validation and its test scores
(:func:`vhrfm.apps.wildfire.score_val_test`, :func:`vhrfm.apps.megafauna.score_val_test`). ``f1_retained`` is the
student's test F1 over that teacher's test F1 in the chapter (the ratio chapter 2's goal reads). The teacher is the
chapter's (seed 0) in every run: the seeds vary the student only. With the applications' student and seed 0 a run
reproduces the chapter's ``student_taskkd`` entry at that budget (a check of the study; same machine).

    python scripts/student_kd_study.py --run wildfire,tinyres16_anyband,0 --run megafauna,tinyres16_anyband,1

Prints a JSON line per run, then the mean over seeds of each (task, student); ``--out FILE`` writes them as JSON too,
with the machine and commit. Needs the profile's outputs of ``dvc repro`` (splits, statistics, the distilled
students, the applications' saved teachers). Choose on the validation columns: the test columns are the held-out split.

``results/studies/student_kd_seeds.json`` (committed; not a pipeline output) was written on the cpu profile by
``--run T,S,N`` for T in wildfire, megafauna, S in tinyres16_anyband, mobilenetv3_small_anyband and N in 0, 1, 2,
with ``--out results/studies/student_kd_seeds.json`` (at 9847276, before ``student_steps``: both tasks' ``steps``).
``results/studies/student_kd_steps.json`` (committed; not a pipeline output), the study behind ``student_steps``:
``--run T,tinyres16_anyband,N,K`` for N in 0, 1, 2 and K the task's ``steps`` and three times that (wildfire 80 and
240, megafauna 150 and 450), with ``--out results/studies/student_kd_steps.json``.
``results/studies/student_kd_weight.json`` (committed; not a pipeline output), the KD weight at the teachers'
schedules: ``--run T,tinyres16_anyband,N,K,W`` for T, K in (wildfire, 80) and (megafauna, 150), W in 0, 0.5, 1, 2, 4
(in that order, W then N) and N in 0, 1, 2, with ``--out results/studies/student_kd_weight.json`` (about 13 minutes).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_study.py, however this file is loaded
from _study import mean_over_seeds, runs_of, study_main  # noqa: E402

TASKS = ("wildfire", "megafauna")
SETTING = ("task", "student", "budget", "steps", "kd_weight")
MEANS = ("val_f1", "test_precision", "test_recall", "test_f1", "f1_retained")


def parse_run(spec: str) -> dict:
    """``TASK,STUDENT,SEED[,STEPS[,KD_WEIGHT]]`` -> its fields (``steps``, ``kd_weight`` None, or STEPS empty: the
    task's own)."""
    parts = spec.split(",")
    if len(parts) not in (3, 4, 5) or parts[0] not in TASKS:
        raise ValueError(f"--run {spec!r}: expected TASK,STUDENT,SEED[,STEPS[,KD_WEIGHT]] with TASK in {TASKS}")
    steps = int(parts[3]) if len(parts) >= 4 and parts[3].strip() else None
    if steps is not None and steps < 1:
        raise ValueError(f"--run {spec!r}: STEPS must be a positive number of training steps")
    kd_weight = float(parts[4]) if len(parts) == 5 else None
    if kd_weight is not None and not kd_weight >= 0:
        raise ValueError(f"--run {spec!r}: KD_WEIGHT must be a number >= 0 (0: the labels alone)")
    return {"task": parts[0], "student": parts[1], "seed": int(parts[2]), "steps": steps, "kd_weight": kd_weight}


def distilled_teacher(profile: str, task: str, app, budget: str):
    """The teacher variant the chapter distilled at ``budget``, its test F1 there, and its saved network (the task
    model the application wrote under its ``model_tag``)."""
    from vhrfm.apps.taskmodel import load_task_model
    from vhrfm.config import models_dir, results_dir

    row = json.loads((results_dir(profile) / task / "metrics.json").read_text())["distillation"]["by_budget"][budget]
    path = models_dir(profile) / task / f"{app.model_tag(row['teacher_model'], budget)}.safetensors"
    return row["teacher_model"], row["teacher_f1"], load_task_model(path, task=task).net


def run(specs: list[str], profile: str) -> list[dict]:
    from vhrfm.apps import megafauna, wildfire
    from vhrfm.config import load_profile
    from vhrfm.distill.task import student_spec
    from vhrfm.heads import train_steps
    from vhrfm.models import list_encoders

    apps = {"wildfire": wildfire, "megafauna": megafauna}
    runs = [parse_run(s) for s in specs]
    for r in runs:
        if r["student"] not in list_encoders():
            raise ValueError(f"--run: unknown student {r['student']!r}; expected one of {list_encoders()}")
        # the application's student spec with this student put in: its KD weights, the task's head
        r["spec"] = student_spec(profile, {**load_profile(profile)[r["task"]], "student": r["student"]})
        if not r["spec"]["path"].exists():
            raise ValueError(f"--run: {r['spec']['path']} not found (a student of the profile's `distill.students`?)")
    tasks, teachers, rows = {}, {}, []
    for r in runs:
        name, spec = r["task"], r.pop("spec")
        if name not in tasks:
            tasks[name] = apps[name].load_task(profile, progress=False)
        task = tasks[name]
        cfg = task.cfg if r["steps"] is None else {**task.cfg, "student_steps": r["steps"]}
        cfg = cfg if r["kd_weight"] is None else {**cfg, "kd_weight": r["kd_weight"]}
        task = dataclasses.replace(task, cfg=cfg)
        r["steps"], r["kd_weight"] = train_steps("student_taskkd", cfg), cfg.get("kd_weight", 1.0)
        budget = max(cfg["budgets"], key=cfg["budgets"].get)
        if name not in teachers:
            teachers[name] = distilled_teacher(profile, name, apps[name], budget)
        teacher_model, teacher_f1, teacher_net = teachers[name]
        kd = {"kd_teacher": teacher_net, "kd_pool": task.train, "kd_weight": r["kd_weight"]}
        sub, seed, t0 = task.train.subset(task.budgets[budget]), r["seed"], time.perf_counter()
        desc = f"{name} {r['student']} seed {seed}"
        if name == "wildfire":
            _, predict, _ = wildfire.fit_model("student_taskkd", sub, task, seed, student=spec, kd=kd, progress=False,
                                               desc=desc)
            m, *_ = wildfire.score_val_test(predict, task.val, task.test, cfg["min_precision"], cfg["n_boot"], seed,
                                            precision_target=cfg.get("precision_target"))
        else:
            model, _ = megafauna.fit_detector("student_taskkd", sub, task.teacher, seed, cfg, student=spec,
                                              output_prior=cfg.get("heatmap_prior"), kd=kd, progress=False, desc=desc)
            m, *_ = megafauna.score_val_test(lambda d, net=model: megafauna.predict_heat(net, d), task.val, task.test,
                                             cfg, seed)
        row = {**r, "budget": budget, "teacher_model": teacher_model, "teacher_f1": teacher_f1,
               "seconds": round(time.perf_counter() - t0, 1), "val_f1": m["val"]["f1"],
               "test_precision": m["precision"], "test_recall": m["recall"], "test_f1": m["f1"],
               "test_f1_ci95": m["f1_ci95"],
               "f1_retained": m["f1"] / teacher_f1 if teacher_f1 > 0 else None}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds of each (task, student, budget), with the smallest retained share over its seeds."""
    means = mean_over_seeds(rows, SETTING, MEANS)
    for s in means:
        s["f1_retained_min"] = min(r["f1_retained"] for r in runs_of(rows, s, SETTING))
    return means


def main(argv=None) -> None:
    study_main(argv, __doc__, "TASK,STUDENT,SEED[,STEPS[,KD_WEIGHT]]", run, summarise)


if __name__ == "__main__":
    main()
