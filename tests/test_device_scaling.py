"""scripts/device_pretrain_scaling.py: the pieces that decide whether a GPU lease's result comes back intact."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from vhrfm.config import project_root

SCRIPT = project_root() / "scripts" / "device_pretrain_scaling.py"


@pytest.fixture
def script(load_script):
    return load_script("device_pretrain_scaling")


def test_shards_round_trip_within_fp16(script, tmp_path, monkeypatch):
    from vhrfm.models import create_encoder

    monkeypatch.setattr(script, "SHARD_BYTES", 6_000_000)  # above its largest tensor (4.7 MB in fp16): several shards
    torch.manual_seed(0)
    enc = create_encoder("resnet18_anyband").eval()
    names = script._save_shards(tmp_path / "step7", enc, {"arch": "resnet18_anyband", "steps_done": 7})
    assert len(names) > 1 and all((tmp_path / n).stat().st_size <= 6_100_000 for n in names)
    back = script._load_shards(tmp_path, "step7")
    assert back.card["steps_done"] == 7
    ref, got = enc.state_dict(), back.state_dict()
    assert ref.keys() == got.keys()
    for k, v in ref.items():
        if v.is_floating_point():  # fp16 rounding only
            assert torch.allclose(got[k], v, rtol=1e-3, atol=1e-4), k
        else:
            assert torch.equal(got[k], v), k
    x = torch.randn(2, 3, 32, 32)
    wl = torch.tensor([660.0, 560.0, 490.0])
    a, b = enc(x, wl, torch.ones(2)), back(x, wl, torch.ones(2))
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999
    (tmp_path / names[-1]).unlink()  # a shard that did not come back: the encoder is refused, not half-loaded
    with pytest.raises(FileNotFoundError, match="shard"):
        script._load_shards(tmp_path, "step7")


def test_missing_packages_are_stood_in_and_found_ones_are_not(script):
    code = (f"import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('s', {str(SCRIPT)!r}); m = importlib.util.module_from_spec(spec)\n"
            f"spec.loader.exec_module(m)\n"
            f"print(m._stub_missing(('numpy', 'no_such_package_xyz')))\n"
            f"from no_such_package_xyz.windows import Window\n"
            f"import no_such_package_xyz as r\n"
            f"r.enums.Resampling.average; Window(0, 0, 1, 1)\n"
            f"print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['no_such_package_xyz']", "ok"]


def test_corpus_quantisation_keeps_values_within_half_a_step(script, tmp_path, monkeypatch):
    from vhrfm.ssl.corpus import Corpus

    rng = np.random.default_rng(0)
    corpus = Corpus.from_arrays({"ms": (rng.normal(size=(6, 3, 16, 16)), [480, 560, 660], [60, 70, 60], 0.5),
                                 "pan": (rng.normal(size=(4, 1, 16, 16)) * 3, [600], [300], 0.3)})
    monkeypatch.setattr("vhrfm.ssl.run.corpus_for", lambda profile, progress=True: (corpus, {}))
    script.prepare(tmp_path)
    back, meta = script._load_corpus(tmp_path)
    assert [p.key for p in back.products] == ["ms", "pan"] and np.allclose(back.weights, corpus.weights)
    for p, q, m in zip(corpus.products, back.products, meta["products"]):
        step = np.asarray(m["scale"])[None, :, None, None]
        err = np.abs(p.crops.astype(np.float32) - q.crops.astype(np.float32))
        assert q.crops.dtype == np.float16 and (err <= step / 2 + 2e-3 * np.abs(p.crops.astype(np.float32)) + 1e-3).all()
        assert np.allclose(q.wavelengths, p.wavelengths) and q.gsd == p.gsd


def test_views_variants_override_real_settings_and_name_their_files(script):
    from vhrfm.ssl.run import method_config

    _, cfg = method_config("gpu", script.METHOD)
    assert script.VARIANTS["views"] == {}
    for v, over in script.VARIANTS.items():
        assert set(over) <= set(cfg), v  # an override of a setting the method has, not a new key it would ignore
        assert all(cfg[k] != val for k, val in over.items()), v  # and one that changes it
    assert script.file_stem("2177") == "step2177" and script.file_stem("nospectral_step2177") == "nospectral_step2177"
    with pytest.raises(SystemExit, match="unknown variant"):
        script.train(None, None, 1.0, 1, 0, variants=("no_such_variant",))

