"""scripts/student_kd_study.py: its summary is the mean over seeds of each (task, student) with the worst seed's
retained share, it refuses what it cannot run before training, and on the smoke profile a run of the applications'
student at seed 0 reproduces the chapter's task-KD entry (same code path, same teacher)."""

import json

import pytest


def test_summary_means_each_task_and_student_and_keeps_the_worst_seed(load_script):
    mod = load_script("student_kd_study")
    base = {"budget": "100%", "steps": 80, "kd_weight": 1.0, "val_f1": 0.5, "test_precision": 0.8, "test_recall": 0.6}
    rows = [{**base, "task": "wildfire", "student": "a", "seed": s, "test_f1": f, "f1_retained": f / 0.8}
            for s, f in ((0, 0.8), (1, 0.72))]
    rows.append({**base, "task": "megafauna", "student": "a", "seed": 0, "test_f1": 0.6, "f1_retained": 0.6 / 0.65})
    rows.append({**base, "task": "wildfire", "student": "a", "seed": 0, "steps": 240, "test_f1": 0.7,
                 "f1_retained": 0.7 / 0.8})
    rows.append({**base, "task": "wildfire", "student": "a", "seed": 0, "kd_weight": 4.0, "test_f1": 0.6,
                 "f1_retained": 0.6 / 0.8})
    out = {(s["task"], s["student"]): s for s in mod.summarise(rows) if s["steps"] == 80 and s["kd_weight"] == 1.0}
    assert set(out) == {("wildfire", "a"), ("megafauna", "a")}
    (heavier,) = [s for s in mod.summarise(rows) if s["kd_weight"] == 4.0]  # another KD weight, another setting
    assert heavier["seeds"] == [0] and heavier["test_f1_mean"] == pytest.approx(0.6)
    (longer,) = [s for s in mod.summarise(rows) if s["steps"] == 240]  # another schedule is another setting
    assert longer["seeds"] == [0] and longer["test_f1_mean"] == pytest.approx(0.7)
    w = out["wildfire", "a"]
    assert w["seeds"] == [0, 1] and w["test_f1_mean"] == pytest.approx(0.76)
    assert w["f1_retained_mean"] == pytest.approx(0.95) and w["f1_retained_min"] == pytest.approx(0.9)
    assert out["megafauna", "a"]["f1_retained_min"] == pytest.approx(0.6 / 0.65)


def test_it_refuses_what_it_cannot_run_before_training(load_script):
    mod = load_script("student_kd_study")
    with pytest.raises(SystemExit):
        mod.main([])  # --run is required
    with pytest.raises(ValueError, match="TASK,STUDENT,SEED"):
        mod.run(["wildfire,tinyres16_anyband"], "smoke")
    with pytest.raises(ValueError, match="TASK,STUDENT,SEED"):
        mod.run(["fires,tinyres16_anyband,0"], "smoke")
    with pytest.raises(ValueError, match="unknown student 'nope'"):
        mod.run(["wildfire,nope,0"], "smoke")
    # a registry encoder the smoke profile's distill stage did not distil: no KD weights to start from
    with pytest.raises(ValueError, match="kd_convnext_atto_anyband.safetensors not found"):
        mod.run(["megafauna,convnext_atto_anyband,0"], "smoke")
    with pytest.raises(ValueError, match="STEPS must be a positive"):
        mod.run(["wildfire,tinyres16_anyband,0,0"], "smoke")
    with pytest.raises(ValueError, match="KD_WEIGHT must be a number >= 0"):
        mod.run(["wildfire,tinyres16_anyband,0,80,-1"], "smoke")
    with pytest.raises(ValueError, match="TASK,STUDENT,SEED"):
        mod.run(["wildfire,tinyres16_anyband,0,80,1,2"], "smoke")
    assert mod.parse_run("megafauna,tinyres16_anyband,2") == {"task": "megafauna", "student": "tinyres16_anyband",
                                                              "seed": 2, "steps": None, "kd_weight": None}
    assert mod.parse_run("wildfire,tinyres16_anyband,1,240")["steps"] == 240
    assert mod.parse_run("wildfire,tinyres16_anyband,1,,4")["steps"] is None  # the task's own schedule
    assert mod.parse_run("wildfire,tinyres16_anyband,1,80,0.5")["kd_weight"] == 0.5


@pytest.mark.parametrize("task", ["wildfire", "megafauna"])
def test_a_smoke_run_reproduces_the_chapters_task_kd_entry(load_script, real_data, task):
    from vhrfm.config import load_profile, results_dir
    from vhrfm.heads import train_steps

    mod = load_script("student_kd_study")
    student = load_profile("smoke")[task]["student"]
    (row,) = mod.run([f"{task},{student},0"], "smoke")
    block = json.loads((results_dir("smoke") / task / "metrics.json").read_text())["distillation"]
    entry = block["by_budget"][row["budget"]]
    assert block["student"] == student and row["teacher_model"] == entry["teacher_model"]
    assert row["steps"] == train_steps("student_taskkd", load_profile("smoke")[task]) == block["steps"]["student"]
    assert row["kd_weight"] == load_profile("smoke")[task]["kd_weight"]
    assert row["test_f1"] == pytest.approx(entry["student_taskkd_f1"], abs=1e-9)
    assert row["f1_retained"] == pytest.approx(entry["f1_retained"], abs=1e-9)
