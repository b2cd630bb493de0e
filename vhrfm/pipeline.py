"""Helpers for the DVC pipeline: stage names per profile, and running a notebook with papermill."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from vhrfm.config import project_root


def stages(profile: str) -> list[str]:
    """DVC stage names (``name@profile``) of every foreach stage, in file order."""
    spec = yaml.safe_load((project_root() / "dvc.yaml").read_text())
    profiles = spec["vars"][0]["runs"]
    if profile not in profiles:
        raise SystemExit(f"profile {profile!r} is not in dvc.yaml vars (have {sorted(profiles)})")
    return [f"{name}@{profile}" for name, st in spec["stages"].items() if "foreach" in st]


def run_notebook(source: str | Path, output: str | Path, parameters: dict, progress: bool = True) -> Path:
    """Execute a jupytext .py notebook with papermill (cwd = the notebook's folder) and write the .ipynb."""
    import jupytext
    import papermill as pm

    source, output = Path(source).resolve(), Path(output).resolve()
    nb = jupytext.read(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_in = output.with_suffix(".input.ipynb")
    jupytext.write(nb, tmp_in, fmt="ipynb")
    try:
        pm.execute_notebook(str(tmp_in), str(output), parameters=parameters, cwd=str(source.parent),
                            kernel_name="python3", progress_bar=progress, request_save_on_cell_execute=False)
    finally:
        tmp_in.unlink(missing_ok=True)
    return output


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "stages":
        print(" ".join(stages(sys.argv[2])))
    else:
        raise SystemExit("usage: python -m vhrfm.pipeline stages PROFILE")
