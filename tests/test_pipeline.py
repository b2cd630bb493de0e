"""The pipeline's wiring: notebooks' papermill parameters, params.yaml profiles and dvc.yaml agree."""

import ast
from pathlib import Path

import jupytext
import pytest
import yaml

from vhrfm.config import PROFILES, load_profile, project_root
from vhrfm.errors import VHRFMInputError
from vhrfm.pipeline import stages

ROOT = project_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _parameters(path: Path) -> dict:
    nb = jupytext.read(path)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: exactly one cell tagged `parameters` (jupytext keeps the tag)"
    out = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: parameters cell holds plain assignments only"
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/*.py found"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_parameters_match_params_yaml_and_dvc(nb):
    params = _parameters(nb)
    assert set(params) == {"profile"}, "notebook settings belong in params.yaml profiles, not in extra parameters"
    assert params["profile"] in PARAMS["profiles"]
    # the notebook is run by a DVC stage that passes exactly its parameters
    cmds = [st["do"]["cmd"] for st in DVC["stages"].values() if "foreach" in st and f"notebooks/{nb.name}" in st["do"]["cmd"]]
    assert len(cmds) == 1, f"{nb.name} must be run by exactly one dvc stage"
    assert "--profile ${key}" in cmds[0]


def test_profiles_have_the_same_keys():
    keys = {p: sorted(PARAMS["profiles"][p]) for p in PROFILES}
    assert keys["smoke"] == keys["cpu"] == keys["gpu"]
    for section in keys["cpu"]:
        assert sorted(PARAMS["profiles"]["smoke"][section]) == sorted(PARAMS["profiles"]["cpu"][section]) == sorted(PARAMS["profiles"]["gpu"][section])
    for run in DVC["vars"][0]["runs"]:
        assert run in PARAMS["profiles"]


def test_stage_names_per_profile():
    """Every chapter's stage, per profile (dvc repro orders them by their dependencies, not by this list)."""
    chapters = ["prepare", "data", "pretrain", "pretraining", "distill", "wildfire", "megafauna", "distillation",
                "multisensor", "paper", "release"]
    for profile in ("smoke", "cpu"):
        got = stages(profile)
        assert sorted(got) == sorted(f"{c}@{profile}" for c in chapters)
        assert got.index(f"prepare@{profile}") == 0
    with pytest.raises(SystemExit):
        stages("nope")


def test_unknown_profile_is_a_clear_error():
    assert load_profile("smoke")["seed"] == PARAMS["seed"]
    with pytest.raises(VHRFMInputError, match="unknown profile"):
        load_profile("huge")


def test_metrics_are_kept_in_git_and_outputs_in_dvc():
    checked = []
    for name, st in DVC["stages"].items():
        for m in st["do"].get("metrics", []):
            spec = next(iter(m.values())) if isinstance(m, dict) else {}
            assert spec.get("cache") is False, f"{name}: metrics files are committed (cache: false)"
            checked.append(name)
    # every chapter writes one: data, pretraining, distillation, multisensor, wildfire, megafauna
    assert sorted(checked) == ["data", "distillation", "megafauna", "multisensor", "pretraining", "wildfire"]


def test_pretrain_stage_depends_on_every_objective_module():
    """The pretrain stage re-runs when the code of any objective it can train changes: every ``vhrfm/ssl`` module the
    pretraining loop imports is one of the stage's deps (an objective added without its dep would leave the stage
    up to date after its code changed)."""
    import subprocess
    import sys

    code = ("import sys, vhrfm.ssl.run; print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items() "
            "if n.startswith('vhrfm.ssl.') and getattr(m, '__file__', None))))")
    files = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    deps = set(DVC["stages"]["pretrain"]["do"]["deps"])
    used = {str(Path(f).resolve().relative_to(ROOT)) for f in files}
    assert "vhrfm/ssl/vicreg.py" in used and "vhrfm/ssl/contrastive.py" in used
    assert used - deps == set(), f"add these to the pretrain stage's deps in dvc.yaml: {sorted(used - deps)}"
