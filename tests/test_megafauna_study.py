"""scripts/megafauna_training_study.py: its summary is the mean over seeds of each setting, it parses its runs and
refuses models it cannot train alone before reading any data."""

import pytest


def test_summary_is_the_mean_over_seeds_of_each_setting(load_script):
    mod = load_script("megafauna_training_study")
    row = {"model": "u", "budget": "100%", "lr": 1e-3, "sigma_m": 0.45, "test_precision": 0.9, "test_recall": 0.5,
           "tta_val_f1": 0.5, "tta_test_precision": 0.95, "tta_test_recall": 0.4, "tta_test_f1": 0.6, "tta_test_ap": 0.5}
    rows = [{**row, "steps": 150, "seed": s, "val_f1": v, "test_f1": t, "test_ap": a}
            for s, v, t, a in ((0, 0.8, 0.7, 0.6), (1, 0.6, 0.5, 0.2))]
    rows.append({**row, "steps": 150, "sigma_m": 0.3, "seed": 0, "val_f1": 0.1, "test_f1": 0.1, "test_ap": 0.1})
    rows.append({**row, "steps": 600, "seed": 0, "val_f1": 0.9, "test_f1": 1.0, "test_ap": 1.0})
    out = {(s["steps"], s["sigma_m"]): s for s in mod.summarise(rows)}
    assert set(out) == {(150, 0.45), (150, 0.3), (600, 0.45)}
    assert out[150, 0.45]["seeds"] == [0, 1]
    assert out[150, 0.45]["val_f1_mean"] == pytest.approx(0.7) and out[150, 0.45]["test_ap_mean"] == pytest.approx(0.4)
    assert out[150, 0.3]["test_f1_mean"] == pytest.approx(0.1) and out[600, 0.45]["test_f1_mean"] == 1.0
    assert out[150, 0.45]["tta_test_precision_mean"] == pytest.approx(0.95)  # the same detector with TTA, meaned too


def test_a_run_needs_its_fields_and_a_model_it_can_train(load_script):
    mod = load_script("megafauna_training_study")
    with pytest.raises(SystemExit):
        mod.main([])  # --run is required
    with pytest.raises(ValueError, match="MODEL,BUDGET,STEPS,LR,SEED"):
        mod.run(["unet_scratch,100%"], "smoke")
    # students need the main table's teachers, classical is not trained: refused before any data is read
    for name in ("student_taskkd", "classical", "no_such_model"):
        with pytest.raises(ValueError, match="not classical, not a student"):
            mod.run([f"{name},100%,10,0.001,0"], "smoke")
    assert mod.parse_run("teacher_unet,25%,600,0.001,1") == {"model": "teacher_unet", "budget": "25%", "steps": 600,
                                                             "lr": 0.001, "seed": 1, "sigma_m": None}
    assert mod.parse_run("unet_scratch,10%,150,0.003,0,0.3")["sigma_m"] == 0.3


def test_the_record_names_the_machine_and_the_commit_it_ran_on(load_script, tmp_path):
    """Another CPU gives other numbers for the same seed (README), so a study record says where it was computed."""
    import json
    import re

    from vhrfm.provenance import machine_fingerprint

    load_script("megafauna_training_study")  # puts scripts/ on the path for _study
    import _study

    rows = [{"model": "u", "seed": 0, "f1": 0.5}]
    _study.study_main(["--run", "x", "--out", str(tmp_path / "r.json")], "doc", "SPEC", lambda specs, profile: rows,
                      lambda rs: _study.mean_over_seeds(rs, ("model",), ("f1",)))
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["machine"] == machine_fingerprint() and rec["runs"] == rows and rec["means"][0]["f1_mean"] == 0.5
    assert rec["commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", rec["commit"]), rec["commit"]
