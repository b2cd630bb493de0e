import json

import jinja2
import pytest

from vhrfm.config import project_root
from vhrfm.paper import CHAPTERS, literal_numbers, render

TEMPLATE = project_root() / "paper" / "paper.md"


def test_paper_source_has_no_literal_result_numbers():
    found = literal_numbers(TEMPLATE.read_text())
    assert found == [], f"type these through placeholders from metrics.json: {found}"


@pytest.mark.parametrize("text,bad", [("accuracy was 87.3 % on test", True), ("we saw 0.912", True), ("1154 boxes", True),
                                      ("{{ m.x.y | pct }} accuracy", False), ("Sentinel-2 at 10 m (2019)", False),
                                      ("{# 0.5 in a comment #} fine", False), ("95 % CI", False)])
def test_literal_number_detector(text, bad):
    assert bool(literal_numbers(text)) is bad


def _fake_results(root, chapters):
    for ch, metrics in chapters.items():
        d = root / "results" / ch
        (d / "figures").mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(metrics))


def test_placeholder_without_value_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    _fake_results(tmp_path, {"data": {"totals": {"images": 3}}, **{ch: {} for ch in CHAPTERS if ch != "data"}})
    tpl = tmp_path / "t.md"
    tpl.write_text("images: {{ m.data.totals.images }}\n")
    out = render("cpu", tpl, tmp_path / "o.html")
    assert "images: 3" in out.with_suffix(".md").read_text()
    tpl.write_text("missing: {{ m.data.totals.boxes }}\n")
    with pytest.raises(jinja2.UndefinedError):
        render("cpu", tpl, tmp_path / "o.html")


def test_smoke_paper_renders_from_the_smoke_metrics(real_data, tmp_path):
    res = project_root() / "results" / "smoke"
    if not (res / "pretraining" / "metrics.json").exists():
        pytest.fail("smoke results missing: `make test` runs the smoke pipeline first (make repro-smoke)")
    out = render("smoke", out=tmp_path / "paper.html")
    html = out.read_text()
    md = out.with_suffix(".md").read_text()
    assert "<table>" in html and "data:image/png;base64" in html
    metrics = json.loads((res / "data" / "metrics.json").read_text())
    assert f"holds {metrics['totals']['images']} real images" in md
    study = json.loads((res / "pretraining" / "metrics.json").read_text())["seed_study"]
    assert "Is the margin the seed?" in md  # the smoke profile has a seed study too
    for sd in study["seeds"]:
        assert f"| {sd} | {100 * study['linear_acc']['pretrained'][str(sd)]:.1f} % |" in md
    levels = json.loads((res / "pretraining" / "metrics.json").read_text())["levels"]
    assert "Which depth do the tasks read?" in md  # each level probed alone, teacher and its random init
    for method in levels["methods"].values():
        assert f"| {method} | " + "".join(f"{100 * a:.1f} % | " for a in levels["mean"][method]) in md


def test_a_detector_without_detections_has_no_precision_printed():
    from vhrfm.paper import NOT_MEASURED, det_precision

    assert det_precision({"precision": 1.0, "recall": 0.0}) == "none detected"  # no tp and no fp
    assert det_precision({"precision": 1.0, "recall": 0.5}) == "100.0 %"
    assert det_precision({"precision": 0.0, "recall": 0.0}) == "0.0 %"  # false positives only
    assert det_precision({"precision": None, "recall": None}) == NOT_MEASURED


def test_budget_order_and_unmeasured_values():
    from vhrfm.paper import NOT_MEASURED, by_budget, num, pct

    assert [k for k, _ in by_budget({"1%": 0, "10%": 1, "100%": 2, "5%": 3})] == ["1%", "5%", "10%", "100%"]
    assert by_budget({"all": 1, "25%": 2})[0][0] == "25%"
    assert pct(None) == num(None) == NOT_MEASURED and pct(0.1234) == "12.3 %" and num(2.0, 1) == "2.0"


def test_readme_results_table_is_current():
    """The README's results table is generated from the committed cpu metrics (`vhrfm readme`); stale = failure."""
    from vhrfm.paper import results_table, update_readme

    table = results_table("cpu")
    assert table.count("\n") >= 6 and "pretraining" in table and "megafauna" in table
    assert update_readme(check=True), "README results table is stale: run `vhrfm readme` after `dvc repro`"


def test_points_filter_signs_differences_and_says_when_unmeasured():
    from vhrfm.paper import NOT_MEASURED, points

    assert points(-0.0195) == "-1.9 points" and points(0.25) == "+25.0 points" and points(None) == NOT_MEASURED


def test_distillation_speed_paragraphs_read_the_scan_and_the_task_networks(real_data, tmp_path, monkeypatch):
    """The chapter-2 paragraphs on untrained candidates and on the task networks, rendered by the real template from
    the smoke metrics with these two blocks replaced: several candidates (the fastest differs per runtime), a teacher
    row without speed-ups over itself, a student head."""
    import shutil

    src = project_root() / "results" / "smoke"
    if not (src / "distillation" / "metrics.json").exists():
        pytest.fail("smoke results missing: `make test` runs the smoke pipeline first (make repro-smoke)")
    shutil.copytree(src, tmp_path / "results" / "smoke")
    path = tmp_path / "results" / "smoke" / "distillation" / "metrics.json"
    m = json.loads(path.read_text())
    t_flops = m["teacher"]["flops_per_image"]

    def cand(st, so, distilled_as=None):
        return {"params": 1000, "flops_per_image": t_flops / 50, "size_mb_fp32": 0.1, "speedup_torch": st,
                "speedup_torch_iqr": [st - 0.1, st + 0.1], "speedup_onnx": so, "speedup_onnx_iqr": [so - 1, so + 1],
                "calls_per_timing": {"torch": 2, "onnx": 9}, "distilled_as": distilled_as}

    m["architecture_scan"] = {"net_a": cand(6.0, 25.0), "net_b": cand(7.5, 12.0), "net_c": cand(5.0, 22.0, "student_c")}
    base = {"params": 10, "flops_per_image": 2e9, "encoder_flops_share": 0.4, "cpu_latency_ms": 9.0,
            "onnx_latency_ms": 4.0, "speedup_onnx_vs_torch": 2.25, "speedup_onnx_vs_torch_iqr": [2.0, 2.5]}
    student = {**base, "model": "wildfire_student_x", "flops_per_image": 1e8, "speedup_torch": 3.0,
               "speedup_torch_iqr": [2.9, 3.1], "speedup_onnx": 8.0, "speedup_onnx_iqr": [7.0, 9.0],
               "head": {"decoder": "fpn", "width": 32, "skip_levels": 1}}
    m["task_models"] = {"wildfire": {"reference": "teacher", "input": [3, 64, 64],
                                     "models": {"teacher": {**base, "model": "wildfire_teacher_x", "head": {"decoder": "unet"}},
                                                "student": student}}}
    path.write_text(json.dumps(m))
    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    md = " ".join(render("smoke", TEMPLATE, tmp_path / "p.html").with_suffix(".md").read_text().split())
    assert "Of these 3 architectures, 0 reach the twenty-fold target in PyTorch and 2 in ONNX Runtime." in md
    assert "The best speed-up in PyTorch is 7.5 (net_b, with 50 times fewer FLOPs than the teacher)" in md
    assert "the best in ONNX Runtime is 25.0 (net_a)" in md
    assert "On this machine the target is within reach only in ONNX Runtime." in md
    # a candidate that is one of the chapter's students is not called undistilled; the others are
    assert "Of those reaching it in ONNX Runtime, student_c is a student of this chapter" in md
    assert "net_a has not been distilled: whether it keeps the teacher's task F1 is not measured." in md
    assert "net_c has not been distilled" not in md
    assert "| wildfire | teacher: wildfire_teacher_x | unet | 10 | 2.00 (40.0 %) | — | — | 2.2 (2.0–2.5) |" in md
    assert ("| wildfire | student: wildfire_student_x | fpn, width 32, skips 1 | 10 | 0.10 (40.0 %) | 3.0 (2.9–3.1) | "
            "8.0 (7.0–9.0) |") in md


def test_resolution_split_reads_the_vhr_group_and_needs_both_groups():
    from vhrfm.paper import _resolution_text

    by = {"vhr": {"tasks": ["aircraft", "seals"], "ssl_linear_acc": 0.8, "random_linear_acc": 0.85, "rcf_linear_acc": 0.75,
                  "pixel_stats_linear_acc": 0.7},
          "out_of_resolution": {"tasks": ["burned"], "ssl_linear_acc": 0.6, "random_linear_acc": 0.7,
                                "rcf_linear_acc": 0.8, "pixel_stats_linear_acc": 0.75}}
    text = _resolution_text(by)
    assert "aircraft, seals" in text and "80.0 %" in text and "85.0 %" in text and "75.0 %" in text
    assert "60.0 %" not in text  # the out-of-resolution group is the paper's, not the headline's
    assert _resolution_text(None) == "" and _resolution_text({"vhr": by["vhr"]}) == ""


def test_pooled_reading_needs_both_figures():
    from vhrfm.paper import _pooled_text

    text = _pooled_text({"ssl_pooled_linear_acc": 0.713, "random_pooled_linear_acc": 0.688})
    assert "71.3 %" in text and "random init 68.8 %" in text
    assert _pooled_text({}) == "" and _pooled_text({"ssl_pooled_linear_acc": 0.7}) == ""


def test_a_students_goal_cell_names_the_parts_that_fail():
    from vhrfm.paper import _student_goal_text

    ok = {"params_ok": True, "size_ok": True, "speed_ok": True, "f1_ok": True}
    assert _student_goal_text({**ok, "met": True}) == "**met**"
    assert _student_goal_text({**ok, "speed_ok": False, "met": False}) == "not met: speed"
    assert (_student_goal_text({**ok, "params_ok": False, "speed_ok": False, "f1_ok": None, "met": False})
            == "not met: parameters, speed (task F1 on each task not measured)")
    assert _student_goal_text({**ok, "f1_ok": None, "met": False}) == "not met: — (task F1 on each task not measured)"
    # met with the speed read in ONNX Runtime only: said, with what fails in PyTorch
    assert (_student_goal_text({**ok, "speed_ok": False, "met": False, "speed_ok_onnx": True, "met_onnx": True})
            == "**met in ONNX Runtime**; in PyTorch not met: speed")
    assert _student_goal_text({**ok, "speed_ok": False, "met": False, "met_onnx": False}) == "not met: speed"
    # met only at one thread per model in ONNX Runtime: said, with what fails on two cores
    assert (_student_goal_text({**ok, "speed_ok": False, "met": False, "met_onnx": False, "met_onnx_1thread": True})
            == "**met in ONNX Runtime at one thread per model**; on two cores, and in PyTorch, not met: speed")
