"""The release folder (vhrfm export) built from the smoke pipeline's outputs: weights, ONNX graphs that agree
with PyTorch, model and data cards, checksums that catch a changed file."""

import json

import numpy as np
import pytest
import torch

from vhrfm.config import models_dir, project_root
from vhrfm.data.sources import SOURCES
from vhrfm.release import data_card_md, export_release, verify_release


@pytest.fixture(scope="module")
def smoke_release(tmp_path_factory):
    if not (models_dir("smoke") / "teacher.json").exists() or not (project_root() / "paper/build/smoke/paper.html").exists():
        pytest.fail("smoke pipeline outputs missing: run `make repro-smoke` (make test does) first")
    out = tmp_path_factory.mktemp("rel") / "release"
    return out, export_release("smoke", out, progress=False)


def test_release_holds_every_published_model_with_cards_and_checksums(smoke_release):
    out, summary = smoke_release
    manifest = json.loads((out / "manifest.json").read_text())
    names = set(manifest["models"])
    assert "teacher" in names and any(n.startswith("kd_") for n in names)
    for task in ("wildfire", "megafauna"):
        index = manifest[f"{task}_index"]
        assert index["default"] in names and index["default"] == index["student"]  # predict's default: the student
        assert index["teacher"] in names
    for name, entry in manifest["models"].items():
        for rel in entry["files"].values():
            assert (out / rel).exists(), rel
        text = (out / entry["files"]["model_card"]).read_text()
        assert "## Training data and licences" in text and "## Intended use" in text
    # the teacher was pretrained on non-commercial sources (e.g. the Airbus Pleiades aircraft set): it says so
    assert manifest["models"]["teacher"]["non_commercial"]
    assert "Non-commercial" in (out / "cards" / "teacher.md").read_text()
    assert (out / "paper.html").exists() and (out / "CITATION.cff").exists()
    assert verify_release(out) == []
    (out / "paper.html").write_text("tampered")
    assert verify_release(out) == ["paper.html"]


def test_release_onnx_matches_pytorch(smoke_release):
    import onnxruntime as ort

    from vhrfm.apps.taskmodel import load_task_model
    from vhrfm.runtime import FixedTaskNet

    out, _ = smoke_release
    manifest = json.loads((out / "manifest.json").read_text())
    name = manifest["wildfire_index"]["default"]
    files = manifest["models"][name]["files"]
    tm = load_task_model(out / files["card"])
    x = np.random.default_rng(0).normal(size=(2, tm.n_bands, 48, 40)).astype(np.float32)  # other size than exported
    sess = ort.InferenceSession(str(out / files["onnx"]), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    with torch.no_grad():
        want = FixedTaskNet(tm.net, tm.card["wavelengths"], tm.card["widths"], tm.card["gsd_m"],
                            sigmoid=True)(torch.from_numpy(x)).numpy()
        # and the fixed-band graph is the any-band model on its own bands
        ref = torch.sigmoid(tm.net(torch.from_numpy(x), torch.tensor(tm.card["wavelengths"]),
                                   torch.full((2,), tm.card["gsd_m"]), torch.tensor(tm.card["widths"]))).numpy()
    assert got.shape == (2, 1, 48, 40)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(want, ref, atol=1e-5)


def test_data_card_lists_every_source():
    text = data_card_md()
    for s in SOURCES.values():
        assert s.id in text and s.licence in text
    assert "non-commercial use only" in text


def test_export_refuses_without_the_pipeline(tmp_path, monkeypatch):
    import vhrfm.release as rel

    monkeypatch.setattr(rel, "models_dir", lambda profile: tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        export_release("smoke", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
