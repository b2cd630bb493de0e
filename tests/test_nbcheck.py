"""The nbval sandbox: notebooks re-executed by `make test` write into copies, never into the pipeline's outputs."""

from pathlib import Path

import pytest

from vhrfm.nbcheck import sandbox


def _project(root: Path) -> Path:
    (root / "vhrfm").mkdir(parents=True)
    (root / "params.yaml").write_text("seed: 0\n")
    (root / "data").mkdir()
    (root / "data" / "x.tif").write_bytes(b"raw")
    for top in ("results", "models"):
        (root / top / "smoke" / "wildfire").mkdir(parents=True)
        (root / top / "smoke" / "wildfire" / "metrics.json").write_text('{"f1": 0.5}')
        (root / top / "cpu_file.json").write_text("{}")
    (root / ".git").mkdir()
    return root


def test_sandbox_links_the_project_and_copies_the_profile_outputs(tmp_path, monkeypatch):
    root = _project(tmp_path / "proj")
    box = sandbox(root, tmp_path / "box", "smoke")
    assert (box / "data").is_symlink() and (box / "data" / "x.tif").read_bytes() == b"raw"
    assert (box / "params.yaml").is_symlink() and (box / "vhrfm").is_symlink()
    assert not (box / ".git").exists()
    # outputs are real copies: writing there leaves the project's alone
    out = box / "results" / "smoke" / "wildfire" / "metrics.json"
    assert not out.is_symlink() and not (box / "results").is_symlink()
    out.write_text('{"f1": 0.9}')
    (box / "models" / "smoke" / "wildfire" / "metrics.json").write_text("changed")
    assert (root / "results" / "smoke" / "wildfire" / "metrics.json").read_text() == '{"f1": 0.5}'
    assert (root / "models" / "smoke" / "wildfire" / "metrics.json").read_text() == '{"f1": 0.5}'
    # the cpu profile's outputs are not carried into the sandbox
    assert not (box / "results" / "cpu_file.json").exists()
    # and the package resolves the sandbox as the project root
    from vhrfm.config import project_root, results_dir

    monkeypatch.setenv("VHRFM_ROOT", str(box))
    assert project_root() == box.resolve() and results_dir("smoke") == box.resolve() / "results" / "smoke"


def test_the_cpu_profile_cannot_be_sandboxed(tmp_path):
    with pytest.raises(ValueError, match="cpu profile"):
        sandbox(_project(tmp_path / "proj"), tmp_path / "box", "cpu")
