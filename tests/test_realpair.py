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
