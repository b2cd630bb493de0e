"""scripts/wildfire_cv_study.py: its pooled score sums the folds' confusions, its paired differences pair the same
fold, its t interval is the textbook one, it refuses models and budgets it cannot run before reading data, and a smoke
run holds every tile out once."""

import numpy as np
import pytest


def _row(model, fold, f1, precision, confusion, budget="10%", seed=0):
    return {"model": model, "budget": budget, "seed": seed, "fold": fold, "f1": f1, "precision": precision,
            "recall": 0.5, "iou": 0.4, "val_f1": 0.6, "confusion": confusion}


def test_summary_pools_the_folds_and_counts_the_folds_at_goal(load_script):
    mod = load_script("wildfire_cv_study")
    rows = [_row("u", 0, 0.9, 0.95, [8, 0, 2, 10]), _row("u", 1, 0.5, 0.5, [1, 1, 1, 5]),
            _row("t", 0, 0.6, 0.9, [3, 0, 0, 1])]
    out = {s["model"]: s for s in mod.summarise(rows)}
    u = out["u"]
    assert u["folds"] == 2 and u["f1_mean"] == pytest.approx(0.7)
    assert u["f1_sd"] == pytest.approx(np.std([0.9, 0.5], ddof=1))
    # pooled over folds: tp 9, fp 1, fn 3
    assert u["pooled"]["precision"] == pytest.approx(0.9) and u["pooled"]["recall"] == pytest.approx(0.75)
    assert u["pooled"]["iou"] == pytest.approx(9 / 13)
    assert u["folds_at_goal"] == 1              # fold 0 only: precision >= 0.9 and F1 >= 0.85
    assert out["t"]["f1_sd"] is None and out["t"]["folds_at_goal"] == 0


def test_paired_differences_pair_the_same_fold(load_script):
    mod = load_script("wildfire_cv_study")
    rows = [_row("t", f, f1, 0.9, [1, 0, 0, 1]) for f, f1 in ((0, 0.8), (1, 0.6), (2, 0.7))]
    rows += [_row("u", f, f1, 0.9, [1, 0, 0, 1]) for f, f1 in ((2, 0.5), (0, 0.7), (1, 0.65))]  # out of order
    rows += [_row("t", 0, 0.1, 0.9, [1, 0, 0, 1], budget="5%")]                                  # no partner
    (p,) = mod.paired(rows, pairs=(("t", "u"),))
    assert p["budget"] == "10%" and p["f1_diff_per_fold"] == pytest.approx([0.1, -0.05, 0.2])
    assert p["folds_ahead"] == 2 and p["folds"] == 3 and p["f1_diff_mean"] == pytest.approx(0.25 / 3)
    d = np.array([0.1, -0.05, 0.2])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)   # t(0.975, 2 degrees of freedom)
    assert p["f1_diff_ci95_t"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert mod.t_interval(np.array([0.3])) is None


def test_it_refuses_what_it_cannot_run_before_reading_data(load_script):
    mod = load_script("wildfire_cv_study")
    with pytest.raises(ValueError, match="student_taskkd"):
        mod.run("smoke", 5, 0, ["10%"], ["student_taskkd"], [0])
    with pytest.raises(ValueError, match="'nope'"):
        mod.run("smoke", 5, 0, ["10%"], ["nope"], [0])
    with pytest.raises(ValueError, match="'7%'"):
        mod.run("smoke", 3, 0, ["7%"], ["classical"], [0])    # reads the smoke profile's tiles, then refuses


def test_the_goal_is_the_chapters(load_script):
    mod = load_script("wildfire_cv_study")
    assert mod.goal_targets() == (0.90, 0.85)   # goal_check's precision and F1 targets (issue #7)


def test_a_smoke_run_holds_every_tile_out_once_with_the_chapters_budget(load_script, real_data):
    """End to end on the smoke profile (3 folds, the index and the U-Net, through ``wildfire.fit_model``): each fold
    is validated on the next, every train / val tile is held out once (the folds' confusions count every labelled
    pixel of the pool once per model), and each run trains on the chapter's number of labelled tiles."""
    from vhrfm.apps.wildfire import load_task
    from vhrfm.data.datasets import IGNORE

    mod = load_script("wildfire_cv_study")
    models = ["classical", "unet_scratch"]
    out = mod.run("smoke", 3, 0, ["10%"], models, [0])
    task = load_task("smoke", progress=False)
    pool_y = task.tiles.Y[task.tiles.rows.split.to_numpy() != "test"]
    assert sum(f["tiles"] for f in out["folds"]) == len(pool_y)
    runs = out["runs"]
    assert len(runs) == 3 * len(models) and {r["fold"] for r in runs} == {0, 1, 2}
    assert all(r["val_fold"] == (r["fold"] + 1) % 3 for r in runs)
    assert all(r["labelled_tiles"] == len(task.budgets["10%"]) for r in runs)
    for m in models:
        assert sum(sum(r["confusion"]) for r in runs if r["model"] == m) == int((pool_y != IGNORE).sum())
    assert {(s["model"], s["folds"]) for s in out["summary"]} == {(m, 3) for m in models}
