import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vhrfm.checkpoint import load_encoder
from vhrfm.errors import VHRFMInputError
from vhrfm.models import create_encoder
from vhrfm.ssl.contrastive import info_nce
from vhrfm.ssl.mae import MAE, patchify_pixels, random_masking, unpatchify_pixels
from vhrfm.ssl.train import pretrain
from vhrfm.ssl.views import band_dropout, d4, make_view, resized_crop

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import CFG, synthetic_corpus  # noqa: E402


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_patchify_roundtrip_and_masking():
    x = torch.randn(2, 3, 32, 48)
    t = patchify_pixels(x, 8)
    assert t.shape == (2, 24, 3, 64)
    torch.testing.assert_close(unpatchify_pixels(t, 8, 4, 6), x)
    kept, mask = random_masking(2, 24, 0.75, _g())
    assert kept.shape == (2, 6) and mask.sum().item() == 2 * 18
    assert (mask.gather(1, kept) == 0).all()


def test_mae_loss_and_texture_ablation():
    torch.manual_seed(0)
    enc = create_encoder("vit_nano_p8")
    x = torch.randn(2, 4, 32, 32)
    wl, wd = [480, 545, 660, 832], [60, 70, 60, 125]
    with_tex = MAE(enc, decoder_dim=32, decoder_depth=1, texture_weight=0.5)
    o = with_tex(x, wl, torch.tensor([1.0, 1.0]), wd, _g())
    assert torch.isfinite(o["loss"]) and o["texture"] > 0
    assert torch.allclose(o["loss"], o["mse"] + 0.5 * o["texture"])
    o.pop("loss").backward()
    assert enc.patch_embed.gen.to_weight.weight.grad is not None
    no_tex = MAE(enc, decoder_dim=32, decoder_depth=1, texture_weight=0.0)
    o2 = no_tex(x, wl, torch.tensor([1.0, 1.0]), wd, _g())
    assert torch.allclose(o2["loss"], o2["mse"])
    masked, rec, pm = no_tex.reconstruct(x, wl, torch.tensor([1.0, 1.0]), wd, _g())
    assert rec.shape == x.shape and 0.7 < pm.mean() < 0.8
    # visible patches come back unchanged
    assert torch.allclose(rec[pm[:, None].expand_as(rec) == 0], x[pm[:, None].expand_as(x) == 0])


def test_views_update_gsd_and_keep_bands_consistent():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    y = d4(x, _g())
    assert sorted(y[0].flatten().tolist()) == sorted(x[0].flatten().tolist())
    crops, gsd = resized_crop(x, torch.tensor([0.5, 0.5]), 8, (1.5, 1.5), _g())
    assert crops.shape == (2, 3, 8, 8) and torch.allclose(gsd, torch.tensor([0.75, 0.75]))
    wl, wd = torch.tensor([480.0, 560.0, 660.0]), torch.tensor([60.0, 70.0, 60.0])
    for s in range(20):
        xb, wlb, wdb = band_dropout(x, wl, wd, 1.0, _g(s))
        assert 1 <= xb.shape[1] < 3 and xb.shape[1] == len(wlb) == len(wdb)
        assert set(wlb.tolist()) <= set(wl.tolist())
    v = make_view(x, wl, wd, torch.tensor([0.5, 0.5]), out=8, g=_g())
    assert v.image.shape[-1] == 8 and v.image.shape[1] == len(v.wavelengths)


def test_vicreg_terms_penalise_collapse_and_correlation_and_reward_agreement():
    from vhrfm.ssl.vicreg import covariance_term, variance_term, vicreg_loss

    torch.manual_seed(0)
    z = torch.randn(512, 16) * 2  # every dimension's std ~2 > gamma = 1, nearly uncorrelated
    assert variance_term(z) == 0
    collapsed = torch.ones(512, 16)
    assert variance_term(collapsed) == pytest.approx(1 - 1e-2, abs=1e-4)  # relu(1 - sqrt(0 + eps)) per dimension
    assert covariance_term(z) < 0.5
    shared = torch.randn(512, 1).repeat(1, 16)  # every dimension the same: all covariances ~1
    assert covariance_term(shared) == pytest.approx(16 * 15 / 16, rel=0.15)
    same, other = vicreg_loss(z, z), vicreg_loss(z, torch.randn(512, 16) * 2)
    assert same["invariance"] == 0 and other["invariance"] > 1
    assert same["loss"] < other["loss"]
    assert vicreg_loss(collapsed, collapsed)["loss"] > same["loss"]  # agreeing, but collapsed: still penalised


def test_info_nce_prefers_matching_pairs():
    torch.manual_seed(0)
    q = torch.randn(16, 8)
    assert info_nce(q, q + 0.01 * torch.randn(16, 8), 0.2) < info_nce(q, torch.randn(16, 8), 0.2)


@pytest.mark.parametrize("objective", ["mae", "contrastive", "hybrid", "vicreg"])
def test_training_is_deterministic_and_resumes_exactly_after_a_kill(tmp_path, objective):
    corpus = synthetic_corpus()
    cfg = {**CFG, "steps": 4, "ckpt_every": 2}
    a = pretrain(objective, objective, cfg, corpus, tmp_path / "a", progress=False)
    b = pretrain(objective, objective, cfg, corpus, tmp_path / "b", progress=False)
    assert a["param_digest"] == b["param_digest"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(objective, objective, cfg, corpus, tmp_path / "c", progress=False, fail_at_step=3)
    assert (tmp_path / "c" / f"{objective}_checkpoint.pt").exists()
    assert not (tmp_path / "c" / f"{objective}.safetensors").exists()
    c = pretrain(objective, objective, cfg, corpus, tmp_path / "c", progress=False)
    assert c["param_digest"] == a["param_digest"]
    log = (tmp_path / "c" / f"{objective}_log.csv").read_text().splitlines()
    assert len(log) == 1 + 4  # header + one row per step, none duplicated by the resume
    # the card and weights restore the encoder
    enc = load_encoder(tmp_path / "c" / f"{objective}.safetensors")
    assert enc.card["objective"] == objective and enc.card["steps"] == 4
    x = torch.randn(1, 4, 32, 32)
    assert enc(x, [480, 545, 660, 832], 2.0).shape == (1, enc.num_features)


def test_snapshots_are_the_encoder_mid_training_and_step_0_is_the_random_init(tmp_path):
    """The learning curve's premises: a snapshot is the encoder part-way (neither the start nor the end), a resume
    neither rewrites nor loses it, and step 0 is random_encoder(arch, seed), whose probe chapter 1 reuses."""
    from vhrfm.ssl.evaluate import random_encoder
    from vhrfm.ssl.train import SNAPSHOT_DIR, snapshot_name

    corpus = synthetic_corpus()
    cfg = {**CFG, "encoder": "resnet18_anyband", "steps": 4, "ckpt_every": 1, "snapshots": [0, 2]}
    pretrain("m", "contrastive", cfg, corpus, tmp_path / "a", seed=3, progress=False)
    snap = {k: load_encoder(tmp_path / "a" / SNAPSHOT_DIR / f"{snapshot_name('m', k)}.safetensors") for k in (0, 2)}
    assert snap[2].card["steps"] == 2 and snap[0].card["steps"] == 0
    init = random_encoder("resnet18_anyband", 3)
    for k, v in init.state_dict().items():
        assert torch.equal(snap[0].state_dict()[k], v), k
    assert any(not torch.equal(snap[2].state_dict()[k], v) for k, v in init.state_dict().items())
    final = load_encoder(tmp_path / "a" / "m.safetensors")
    assert any(not torch.equal(snap[2].state_dict()[k], v) for k, v in final.state_dict().items())
    # killed after step 3 and resumed: the step-2 snapshot is kept as written, the final weights are unchanged
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain("m", "contrastive", cfg, corpus, tmp_path / "c", seed=3, progress=False, fail_at_step=3)
    p2 = tmp_path / "c" / SNAPSHOT_DIR / f"{snapshot_name('m', 2)}.safetensors"
    before = p2.read_bytes()
    pretrain("m", "contrastive", cfg, corpus, tmp_path / "c", seed=3, progress=False)
    assert p2.read_bytes() == before == (tmp_path / "a" / SNAPSHOT_DIR / p2.name).read_bytes()
    with pytest.raises(ValueError, match="snapshots"):
        pretrain("m", "contrastive", {**cfg, "snapshots": [4]}, corpus, tmp_path / "d", progress=False)


def test_load_encoder_errors(tmp_path):
    with pytest.raises(VHRFMInputError, match="not found"):
        load_encoder(tmp_path / "nothing.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(VHRFMInputError, match="card missing"):
        load_encoder(tmp_path / "w.safetensors")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("objective", ["mae", "hybrid", "vicreg"])
def test_ddp_two_processes_stay_in_sync(tmp_path, objective):
    worker = Path(__file__).parent / "ddp_worker.py"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                        f"--master_port={_free_port()}", str(worker), str(tmp_path), objective],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s0 = json.loads((tmp_path / "rank0.json").read_text())
    s1 = json.loads((tmp_path / "rank1.json").read_text())
    assert s0["world_size"] == s1["world_size"] == 2
    assert s0["param_digest"] == s1["param_digest"]
    # and the replicas did train: their weights moved from the initial ones (the same seed, no step) ...
    init = pretrain(objective, objective, {**CFG, "steps": 0}, synthetic_corpus(), tmp_path / "init", seed=0,
                    progress=False)
    assert init["param_digest"] != s0["param_digest"]
    assert s0["steps"] == CFG["steps"] and np.isfinite(s0["final_loss"])
    # ... and differently from a single-process run on rank 0's data alone (the gradients were averaged)
    single = pretrain(objective, objective, CFG, synthetic_corpus(), tmp_path / "single", progress=False)
    assert single["param_digest"] not in (s0["param_digest"], init["param_digest"])
    assert (tmp_path / f"{objective}.safetensors").exists()
