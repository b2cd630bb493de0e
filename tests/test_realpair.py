"""The real sensor pair of chapter 3 (megafauna, aerial vs WorldView-3): AdaBN on a whole dense detector and the
drop / gap-reduction arithmetic. The full 2 x 2 matrix needs the megafauna stage's outputs and runs in the
multisensor stage."""

import numpy as np
import pytest
import torch

from vhrfm.adapt.realpair import adabn_detector, summarise_pair
from vhrfm.models import create_encoder


def _imgs(shift: float, n: int = 8, size: int = 32):
    import pandas as pd

    from vhrfm.apps.megafauna import DetImages

    rng = np.random.default_rng(0)
    X = (rng.normal(0, 1, (n, 3, size, size)) + shift).astype(np.float32)
    return DetImages(X, np.ones((n, size, size), bool), [np.zeros((0, 2), np.float32)] * n,
                     [np.zeros((0, 2), np.float32)] * n, np.full(n, 0.3), pd.DataFrame({"split": ["test"] * n}),
                     np.array([665.0, 560.0, 490.0], np.float32), np.array([30.0, 35.0, 65.0], np.float32), "test")


def test_adabn_re_estimates_every_batchnorm_of_a_frozen_detector_and_leaves_the_original_alone():
    from vhrfm.heads import Segmenter

    torch.manual_seed(0)
    enc = create_encoder("resnet18_anyband")
    enc.card = {"arch": "resnet18_anyband", "arch_kwargs": {}}
    net = Segmenter(enc, freeze_encoder=True).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    target = _imgs(shift=3.0)
    new = adabn_detector(net, target)
    # the original is untouched; the copy's encoder statistics moved (a frozen encoder's too), its weights did not
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    changed = {k for k, v in new.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("encoder.") and k.endswith("running_mean") for k in changed)
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert not new.training
    # cumulative average (momentum None) over the target, fed once: one batch of 8 images
    bn = next(m for m in new.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum is None and int(bn.num_batches_tracked) == 1


def test_summarise_pair_drops_and_gap_reduction():
    ind = {"a": 0.8, "b": 0.5}
    s = summarise_pair(ind, {"a->b": 0.1, "b->a": 0.2}, {"a->b": 0.3, "b->a": 0.5})
    assert s["drop_naive"] == pytest.approx({"a->b": 0.4, "b->a": 0.6})
    assert s["drop_adapted"] == pytest.approx({"a->b": 0.2, "b->a": 0.3})
    assert s["mean_drop_naive"] == pytest.approx(0.5) and s["mean_drop_adapted"] == pytest.approx(0.25)
    assert s["gap_reduction"] == pytest.approx(0.5)
    # no naive drop: nothing to reduce, so no ratio (not a division by zero or a made-up 0 / 1)
    assert summarise_pair(ind, {"a->b": 0.6, "b->a": 0.9}, {"a->b": 0.6, "b->a": 0.9})["gap_reduction"] is None


def test_hist_match_maps_the_target_onto_the_source_distribution_and_keeps_padding():
    from vhrfm.adapt.realpair import hist_match_images

    source, target = _imgs(shift=0.0), _imgs(shift=5.0, n=6)
    target.valid[:, :, -4:] = False  # padding
    target.X[:, :, :, -4:] = 0.0
    out = hist_match_images(target, target, source)
    assert out.X.shape == target.X.shape and out is not target
    v = out.valid
    # valid pixels now follow the source's distribution (mean ~0, std ~1), padding is still 0
    assert abs(float(out.X[:, 0][v].mean())) < 0.1 and abs(float(out.X[:, 0][v].std()) - 1.0) < 0.1
    assert np.all(out.X[:, :, :, -4:] == 0.0)
    assert float(target.X[:, 0][v].mean()) > 4.0  # the original is untouched


def test_tent_changes_only_batchnorm_affine_parameters_and_lowers_the_heatmap_entropy():
    from vhrfm.adapt.realpair import tent_detector
    from vhrfm.heads import Segmenter

    torch.manual_seed(0)
    enc = create_encoder("resnet18_anyband")
    enc.card = {"arch": "resnet18_anyband", "arch_kwargs": {}}
    net = Segmenter(enc).eval()
    imgs = _imgs(shift=1.0)

    def entropy(m):
        with torch.no_grad():
            logit = m(torch.from_numpy(imgs.X), torch.from_numpy(imgs.wavelengths), torch.from_numpy(imgs.gsd).float(),
                      torch.from_numpy(imgs.widths))[:, 0]
        p = torch.sigmoid(logit)
        return float(-(p * torch.log(p + 1e-12) + (1 - p) * torch.log(1 - p + 1e-12)).mean())

    before = {k: v.clone() for k, v in net.state_dict().items()}
    new = tent_detector(net, imgs, steps=10, lr=1e-2, batch_size=8)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    bn_affine = {n + s for n, m in new.named_modules() if isinstance(m, torch.nn.BatchNorm2d) for s in (".weight", ".bias")}
    changed = {k for k, v in new.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= bn_affine
    assert entropy(new) < entropy(net)
    assert not new.training and not any(p.requires_grad for p in new.parameters())


def test_the_goal_method_is_the_simulated_matrix_adapted_method():
    from vhrfm.adapt.realpair import METHODS, method_for

    assert method_for("own_norm_adabn") == "adabn" and method_for("own_norm") == "naive"
    assert set(map(method_for, ["own_norm", "hist_match", "own_norm_adabn", "own_norm_adabn_tent"])) == set(METHODS)
    with pytest.raises(ValueError, match="no real-pair counterpart"):
        method_for("naive")


def test_a_gain_over_a_weak_in_domain_reference_does_not_offset_the_other_drop_when_floored():
    # b's in-domain F1 is weak (0.05): adapting a->b reaches 0.25, a negative drop of -0.2
    ind = {"a": 0.6, "b": 0.05}
    s = summarise_pair(ind, {"a->b": 0.0, "b->a": 0.1}, {"a->b": 0.25, "b->a": 0.2})
    # signed: naive drops 0.05, 0.5 (mean 0.275); adapted -0.2, 0.4 (mean 0.1): reduction 0.636
    assert s["gap_reduction"] == pytest.approx(1 - 0.1 / 0.275)
    # floored: adapted drops 0, 0.4 (mean 0.2): reduction 0.273; the b->a drop itself is only reduced by 0.2
    assert s["gap_reduction_clipped"] == pytest.approx(1 - 0.2 / 0.275)
    assert s["gap_reduction_by_direction"] == pytest.approx({"a->b": 5.0, "b->a": 0.2})
