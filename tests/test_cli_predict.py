"""`vhrfm predict` as an analyst calls it: which model the default and the index names resolve to, and bad input
that stops with one clear line, exit code 2 and no output folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from vhrfm.apps.taskmodel import save_task_model
from vhrfm.apps.wildfire import ClassicalIndex
from vhrfm.cli import app, resolve_task_model
from vhrfm.errors import VHRFMInputError


def _card(name, threshold):
    return {"task": "wildfire", "name": name, "kind": "classical", "bands": ["b04", "b03", "b02"],
            "wavelengths": [665.0, 560.0, 492.0], "widths": [30.0, 35.0, 65.0], "gsd_m": 2.0, "tile_size": 64,
            "norm": {"mean": [100.0] * 3, "std": [50.0] * 3}, "threshold": threshold}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project root with two wildfire models of the smoke profile and an index naming one the default."""
    folder = tmp_path / "models" / "smoke" / "wildfire"
    for name, thr in (("dark_rule", 0.5), ("strict_rule", 0.9)):
        clf = ClassicalIndex([100.0] * 3, [50.0] * 3)
        clf.name, clf.range = "darkness", (-200.0, -50.0)
        save_task_model(folder / name, clf, _card(name, thr))
    (folder / "index.json").write_text(json.dumps({"default": "dark_rule", "teacher": "strict_rule"}))
    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    arr = np.random.default_rng(0).integers(20, 230, (3, 96, 80)).astype(np.uint8)
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=80, height=96, count=3, dtype="uint8",
                       crs="EPSG:32628", transform=from_origin(400000, 3100000, 2.0, 2.0)) as dst:
        dst.write(arr)
    return tmp_path


def _predict(root, *args):
    return CliRunner().invoke(app, ["predict", str(root / "scene.tif"), "--profile", "smoke", "--quiet", "--no-map",
                                    *args])


def test_default_and_index_names_resolve_through_the_index(root):
    folder = root / "models" / "smoke" / "wildfire"
    assert resolve_task_model("wildfire", None, "smoke") == folder / "dark_rule.json"
    assert resolve_task_model("wildfire", "teacher", "smoke") == folder / "strict_rule.json"
    assert resolve_task_model("wildfire", "strict_rule", "smoke") == folder / "strict_rule.json"
    assert resolve_task_model("wildfire", str(folder / "dark_rule.json"), "smoke") == folder / "dark_rule.json"
    # without --model the index's default runs, with its own threshold chosen on validation
    r = _predict(root, "-o", str(root / "out_default"))
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.splitlines()[0])
    assert summary["model"] == "dark_rule" and summary["threshold"] == 0.5
    r = _predict(root, "-o", str(root / "out_teacher"), "--model", "teacher")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["model"] == "strict_rule"
    # --threshold overrides the card's
    r = _predict(root, "-o", str(root / "out_thr"), "--threshold", "0.7")
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[0])["threshold"] == 0.7


def test_model_lookup_errors_name_what_exists(root):
    with pytest.raises(VHRFMInputError, match="saved no 'student' model") as e:
        resolve_task_model("wildfire", "student", "smoke")
    assert "default" in str(e.value) and "teacher" in str(e.value)
    with pytest.raises(VHRFMInputError, match="task model not found"):
        resolve_task_model("wildfire", "no_such_model", "smoke")
    with pytest.raises(VHRFMInputError, match="no trained megafauna model yet"):
        resolve_task_model("megafauna", None, "smoke")
    with pytest.raises(VHRFMInputError, match="unknown task"):
        resolve_task_model("floods", None, "smoke")


@pytest.mark.parametrize("args, message", [
    (["--threshold", "1.5"], "threshold must be a probability"),
    (["--bands", "b04,b03,b02"], "--bands needs --sensor"),
    (["--sensor", "pleiades"], "cannot tell which pleiades bands"),
    (["--sensor", "no_such_sensor"], "unknown sensor"),
    (["--task", "floods"], "unknown task"),
])
def test_bad_predict_input_stops_before_any_output(root, args, message):
    out = root / "out"
    r = _predict(root, "-o", str(out), *args)
    assert r.exit_code != 0 and isinstance(r.exception, VHRFMInputError)
    assert message in str(r.exception)
    assert not out.exists()


def test_output_path_that_is_a_file_is_refused_and_kept(root):
    out = root / "taken.txt"
    out.write_text("keep me")
    r = _predict(root, "-o", str(out))
    assert isinstance(r.exception, VHRFMInputError) and "not a folder" in str(r.exception)
    assert out.read_text() == "keep me"


def test_predict_error_through_the_entry_point_is_one_line_and_exit_2(root):
    """What a shell user sees: `error: ...` on stderr, exit code 2, no traceback, no output folder."""
    out = root / "out"
    r = subprocess.run([sys.executable, "-m", "vhrfm.cli", "predict", str(root / "scene.tif"), "-o", str(out),
                        "--profile", "smoke", "--threshold", "-0.1", "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "VHRFM_ROOT": str(root)})
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: threshold must be a probability")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert not out.exists()
