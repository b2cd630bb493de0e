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


# the module each stage's command runs; notebook stages run vhrfm.pipeline and the modules their notebook imports
CLI_ENTRY = {"prepare": "vhrfm.data.prepare", "pretrain": "vhrfm.ssl.run", "distill": "vhrfm.distill.train",
             "paper": "vhrfm.paper", "release": "vhrfm.release"}


def _module_file(name: str) -> Path | None:
    p = ROOT / Path(*name.split("."))
    return p / "__init__.py" if (p / "__init__.py").exists() else p.with_suffix(".py") if p.with_suffix(".py").exists() else None


def _vhrfm_imports(path: Path) -> set[Path]:
    """Files of the vhrfm modules ``path`` imports anywhere (top level or inside a function), with their packages."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "vhrfm"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vhrfm":
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")}
    parts = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}
    return {f for f in map(_module_file, parts) if f is not None}


def _code_closure(start: set[Path]) -> set[str]:
    """Every vhrfm file reachable from ``start`` through imports. ``vhrfm/__init__.py`` is in it but not followed:
    its functions are lazy shims for users (``vhrfm.load_encoder``), which no stage calls."""
    seen, todo = set(), list(start)
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo += [] if f == ROOT / "vhrfm" / "__init__.py" else sorted(_vhrfm_imports(f))
    return {str(f.relative_to(ROOT)) for f in seen}


@pytest.mark.parametrize("stage", sorted(DVC["stages"]))
def test_stage_depends_on_all_the_code_it_runs(stage):
    """A stage re-runs when any code it can run changes: every vhrfm module reachable from its command (the CLI
    command's module, or the notebook runner and the notebook's imports), through imports at module level or inside
    functions, is under one of its deps. Over-approximates (a lazily imported module counts even where the stage's
    path does not call it); a missing dep would leave outputs up to date after their code changed."""
    do = DVC["stages"][stage]["do"]
    words = do["cmd"].split()
    if words[:2] == ["vhrfm", "notebook"]:
        start = {ROOT / "vhrfm" / "pipeline.py", ROOT / words[2]}
    else:
        assert stage in CLI_ENTRY, f"name the module `{do['cmd']}` runs in CLI_ENTRY"
        start = {_module_file(CLI_ENTRY[stage])}
    used = _code_closure(start)
    assert "vhrfm/config.py" in used
    deps = [d.rstrip("/") for d in do["deps"]]
    missing = sorted(f for f in used if not any(f == d or f.startswith(d + "/") for d in deps))
    assert missing == [], f"add these to the {stage} stage's deps in dvc.yaml: {missing}"


def test_code_closure_follows_lazy_imports():
    """The closure above sees an import inside a function and a submodule named in ``from package import``."""
    found = _code_closure({ROOT / "vhrfm" / "apps" / "segmentation.py"})
    assert "vhrfm/distill/task.py" in found  # imported inside train_segmenter
    assert "vhrfm/distill/__init__.py" in found and "vhrfm/config.py" in found
    assert _code_closure({ROOT / "vhrfm" / "__init__.py"}) == {"vhrfm/__init__.py"}


@pytest.mark.parametrize("stage", sorted(CLI_ENTRY))
def test_code_closure_holds_what_an_import_loads(stage):
    """The static closure misses nothing a real import of the stage's module loads (a module imported through
    importlib or a re-export would show here), and for pretraining it holds every objective."""
    import subprocess
    import sys

    code = ("import importlib, sys; importlib.import_module(sys.argv[1]); print('\\n'.join(sorted(m.__file__ for n, m in "
            "list(sys.modules.items()) if n.split('.')[0] == 'vhrfm' and getattr(m, '__file__', None))))")
    files = subprocess.run([sys.executable, "-c", code, CLI_ENTRY[stage]], capture_output=True, text=True,
                           check=True).stdout.split()
    loaded = {str(Path(f).resolve().relative_to(ROOT)) for f in files}
    static = _code_closure({_module_file(CLI_ENTRY[stage])})
    assert CLI_ENTRY[stage].replace(".", "/") + ".py" in loaded
    assert loaded - static == set()
    if stage == "pretrain":
        assert {"vhrfm/ssl/vicreg.py", "vhrfm/ssl/contrastive.py", "vhrfm/ssl/mae.py"} <= static
