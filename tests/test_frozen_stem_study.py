"""scripts/frozen_stem_study.py: it freezes the any-band stem of every encoder of the objective (and refuses an
encoder without one), its training without freezing is the pipeline's bit for bit, with the stem frozen the stem
leaves training exactly as the random init of that seed drew it, and it refuses what it cannot run before training."""

import json

import pytest
import torch


def test_freeze_parts_freezes_the_online_and_momentum_stems_only():
    from vhrfm.ssl.train import build_objective, freeze_parts

    cfg = {"encoder": "resnet18_anyband", "mask_ratio": 0.75, "decoder_dim": 32, "decoder_depth": 1, "texture_weight": 0.5,
           "tau": 0.2, "momentum": 0.99}
    assert all(p.requires_grad for p in build_objective("contrastive", cfg).encoder.parameters())  # none by default
    model = build_objective("contrastive", {**cfg, "freeze": ["stem"]})
    assert freeze_parts(model, ["stem"]) == sum(p.numel() for p in model.encoder.stem.parameters()) > 0
    assert not any(p.requires_grad for p in model.encoder.stem.parameters())
    assert not any(p.requires_grad for p in model.momentum_encoder.stem.parameters())
    stem_ids = {id(p) for p in model.encoder.stem.parameters()}
    assert all(p.requires_grad for p in model.encoder.parameters() if id(p) not in stem_ids)  # the rest still trains
    with pytest.raises(ValueError, match="no any-band stem"):
        build_objective("mae", {**cfg, "encoder": "vit_nano_p8", "freeze": ["stem"]})
    with pytest.raises(ValueError, match="unknown part"):
        build_objective("contrastive", {**cfg, "freeze": ["head"]})


def test_it_refuses_what_it_cannot_run_before_training(load_script):
    mod = load_script("frozen_stem_study")
    with pytest.raises(SystemExit):
        mod.main([])  # --run is required
    for bad in ("stem", "all,0", "stem,x"):
        with pytest.raises(ValueError, match="FREEZE,SEED"):
            mod.parse_run(bad)
    assert mod.parse_run("none,2") == {"freeze": "none", "seed": 2}
    with pytest.raises(ValueError, match="not one of the profile's seed study"):
        mod.run(["stem,7"], "smoke")


def test_summary_means_each_freeze_over_its_seeds(load_script):
    mod = load_script("frozen_stem_study")
    rows = [{"freeze": "stem", "seed": s, **{k: v for k in mod.MEANS}} for s, v in ((0, 0.8), (1, 0.7))]
    (entry,) = mod.summarise(rows)
    assert entry["freeze"] == "stem" and entry["seeds"] == [0, 1]
    assert entry["study_linear_acc_mean"] == pytest.approx(0.75) and entry["pipeline_pooled_acc_mean"] == pytest.approx(0.75)


def test_training_is_the_pipelines_and_the_frozen_stem_stays_the_random_init(load_script, real_data, tmp_path):
    from vhrfm.checkpoint import load_encoder
    from vhrfm.config import models_dir
    from vhrfm.ssl.evaluate import random_encoder
    from vhrfm.ssl.run import corpus_for

    mod = load_script("frozen_stem_study")
    corpus = corpus_for("smoke", progress=False)[0]
    pipeline = json.loads((models_dir("smoke") / "ssl" / "summary.json").read_text())["methods"]
    frozen = mod.train_one("smoke", "stem", 0, tmp_path / "stem", corpus)
    assert frozen["method"] == "contrastive_resnet18_frozenstem"  # the seed study's method: the pipeline's frozen stem
    assert frozen["frozen_params"] > 0 and frozen["param_digest"] == pipeline[frozen["method"]]["param_digest"]  # bit for bit
    plain = mod.train_one("smoke", "none", 0, tmp_path / "none", corpus)
    assert plain["frozen_params"] == 0 and plain["param_digest"] == pipeline["contrastive_resnet18"]["param_digest"]
    enc = load_encoder(tmp_path / "stem" / "study.safetensors")
    init = random_encoder(enc.card["arch"], 0)
    for (name, p), (_, q) in zip(enc.stem.named_parameters(), init.stem.named_parameters()):
        assert torch.equal(p, q), name  # never updated (no weight decay either: not in the optimiser)
    stem = {f"body.{enc._stem_name}.{k}" for k, _ in enc.stem.named_parameters()}
    trained = dict(enc.named_parameters())
    assert stem <= set(trained)
    assert any(not torch.equal(trained[k], v) for k, v in init.named_parameters() if k not in stem)  # the rest trained
