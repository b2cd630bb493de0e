"""Project paths and ``params.yaml`` profiles.

Paths resolve from the repository root (the folder holding ``params.yaml``), found from the
environment variable ``VHRFM_ROOT`` or by walking up from the working directory, so notebooks run
by papermill from ``notebooks/`` and the CLI run from anywhere see the same files.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import yaml

from vhrfm.errors import VHRFMInputError

PROFILES = ("smoke", "cpu", "gpu")
APP_TASKS = ("wildfire", "megafauna")  # the applications with task models under models/<task>/


def project_root(start: str | os.PathLike | None = None) -> Path:
    env = os.environ.get("VHRFM_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "params.yaml").exists() and (p / "vhrfm").is_dir():
            return p
    # installed package used outside a checkout: fall back to the source tree of this file
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return project_root() / "data"


def results_dir(profile: str = "cpu") -> Path:
    """Where a profile's results go: ``results/`` for the default profile, ``results/<profile>/`` otherwise."""
    root = project_root() / "results"
    return root if profile == "cpu" else root / profile


def models_dir(profile: str = "cpu") -> Path:
    root = project_root() / "models"
    return root if profile == "cpu" else root / profile


@lru_cache(maxsize=None)
def _load_params(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def load_params(path: str | os.PathLike | None = None) -> dict:
    p = Path(path) if path else project_root() / "params.yaml"
    return _load_params(str(p))


def load_profile(profile: str, path: str | os.PathLike | None = None) -> dict:
    """The settings of one profile, with the top-level ``seed`` merged in."""
    params = load_params(path)
    profiles = params.get("profiles", {})
    if profile not in profiles:
        raise VHRFMInputError("unknown profile", expected=sorted(profiles), found=profile)
    out = {"seed": params.get("seed", 0), "profile": profile}
    out.update(profiles[profile])
    return out
