"""scripts/wildfire_training_study.py: its summary is the mean over seeds of each setting, and it parses its runs."""

import pytest


def test_summary_is_the_mean_over_seeds_of_each_setting(load_script):
    mod = load_script("wildfire_training_study")
    row = {"model": "u", "budget": "10%", "lr": 1e-3, "dice_weight": 0.0}
    rows = [{**row, "steps": 80, "seed": s, "val_f1": v, "test_precision": 0.9, "test_recall": 0.5, "test_f1": t}
            for s, v, t in ((0, 0.8, 0.7), (1, 0.6, 0.5))]
    rows.append({**row, "steps": 240, "seed": 0, "val_f1": 0.9, "test_precision": 1.0, "test_recall": 1.0, "test_f1": 1.0})
    out = {s["steps"]: s for s in mod.summarise(rows)}
    assert set(out) == {80, 240}
    assert out[80]["seeds"] == [0, 1]
    assert out[80]["val_f1_mean"] == pytest.approx(0.7) and out[80]["test_f1_mean"] == pytest.approx(0.6)
    assert out[240]["test_f1_mean"] == 1.0


def test_a_run_needs_its_fields(load_script):
    mod = load_script("wildfire_training_study")
    with pytest.raises(SystemExit):
        mod.main([])  # --run is required
    with pytest.raises(ValueError, match="MODEL,BUDGET,STEPS,LR,SEED"):
        mod.run(["unet_scratch,10%"], "smoke")  # too few fields: fails before reading any data
    assert mod.parse_run("teacher_unet,10%,240,0.001,2") == {"model": "teacher_unet", "budget": "10%", "steps": 240,
                                                             "lr": 0.001, "seed": 2, "dice_weight": None}
    assert mod.parse_run("u,5%,80,0.003,0,1")["dice_weight"] == 1.0
