"""Notebook validation (nbval) that leaves the pipeline's outputs alone.

nbval re-executes every executed notebook of a profile and compares the outputs. Executing a chapter notebook
writes that chapter's outputs again (metrics, figures, models, maps), and several of them are not bit-identical
from run to run (timings, HTML ids): run in place, ``make test`` would leave the workspace out of step with
``dvc.lock``. So the notebooks run in a *sandbox*: a temporary project root (``VHRFM_ROOT``) whose entries are
links to this project's, except the profile's ``results/<profile>`` and ``models/<profile>``, which are copied.

    python -m vhrfm.nbcheck --profile smoke        # what `make test` runs after the unit tests
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from vhrfm.config import models_dir, project_root, results_dir

SKIP = {".git", ".dvc", ".venv", "results", "models"}


def sandbox(root: Path, dest: Path, profile: str = "smoke") -> Path:
    """A project root in ``dest``: links to ``root``'s entries, copies of the profile's results and models.

    The cpu profile's outputs live at the top of ``results/`` and ``models/`` and cannot be separated from the
    others, so only the smaller profiles can be sandboxed."""
    if profile == "cpu":
        raise ValueError("the cpu profile's outputs are the top of results/ and models/: sandbox smoke or gpu")
    root, dest = Path(root).resolve(), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name not in SKIP:
            (dest / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for top in ("results", "models"):
        src = root / top / profile
        if src.exists():
            shutil.copytree(src, dest / top / profile, symlinks=True)
        else:
            (dest / top).mkdir(exist_ok=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vhrfm.nbcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", help="params.yaml profile whose executed notebooks are validated")
    args = ap.parse_args(argv)
    import pytest

    root = project_root()
    notebooks = results_dir(args.profile) / "notebooks"
    if not sorted(notebooks.glob("*.ipynb")):
        print(f"no executed notebooks in {notebooks}: run the {args.profile} pipeline first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vhrfm-nbval-") as tmp:
        box = sandbox(root, Path(tmp) / "root", args.profile)
        rel = notebooks.relative_to(root)
        print(f"nbval in a sandbox of {root} ({box}): {rel} (models: {models_dir(args.profile).relative_to(root)} copied)")
        old = os.environ.get("VHRFM_ROOT")
        os.environ["VHRFM_ROOT"] = str(box)  # the notebooks' kernels inherit it
        try:
            rc = int(pytest.main([str(box / rel), "--nbval-lax", "-p", "no:cacheprovider", f"--rootdir={box}"]))
        finally:
            if old is None:
                os.environ.pop("VHRFM_ROOT", None)
            else:
                os.environ["VHRFM_ROOT"] = old
    if rc == 5:
        print("nbval collected no notebook cells: failing", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
