"""Cross-domain megafauna training: several domains in one detector, leave-one-chip-out on satellite chips."""

import numpy as np
import pandas as pd
import torch

from vhrfm.apps.megafauna import DetImages, leave_one_chip_out, train_detector
from vhrfm.heads import Segmenter
from vhrfm.models import create_encoder


def _imgs(n, bands, gsd, seed, size=32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, bands, size, size)).astype(np.float32) * 0.1
    pts = []
    for i in range(n):
        p = rng.uniform(4, size - 4, size=(2, 2)).astype(np.float32)
        for r, c in p.astype(int):
            X[i, :, r - 1:r + 2, c - 1:c + 2] += 2.0  # bright animals
        pts.append(p)
    wl = np.array([660.0, 560.0, 485.0], np.float32)[:bands] if bands == 3 else np.array([625.0], np.float32)
    wd = np.full(bands, 60.0 if bands == 3 else 350.0, np.float32)
    return DetImages(X, np.ones((n, size, size), bool), pts, [np.zeros((0, 2), np.float32)] * n, np.full(n, gsd),
                     pd.DataFrame({"path": [f"{seed}_{i}" for i in range(n)]}), wl, wd, "test")


def test_detector_trains_on_alternating_domains():
    rgb, pan = _imgs(6, 3, 0.3, 0), _imgs(4, 1, 0.5, 1)
    torch.manual_seed(0)
    model = Segmenter(create_encoder("mobilenetv3_small_anyband"), width=8)
    seen = []
    orig = model.forward
    model.forward = lambda x, wl, gsd, wd=None: (seen.append((x.shape[1], round(float(gsd[0]), 4))), orig(x, wl, gsd, wd))[1]
    h = train_detector(model, [rgb, pan], steps=4, batch_size=2, lr=1e-3, sigma_m=0.45, seed=0, progress=False)
    assert len(h) == 4 and np.isfinite(h).all()
    assert seen == [(3, 0.3), (1, 0.5), (3, 0.3), (1, 0.5)]  # one domain per batch, alternating, own bands and GSD
    sizes = []
    model.forward = lambda x, wl, gsd, wd=None: (sizes.append(tuple(x.shape[-2:])), orig(x, wl, gsd, wd))[1]
    train_detector(model, [rgb, pan], steps=2, batch_size=2, lr=1e-3, sigma_m=0.45, seed=0, crop=16, progress=False)
    assert sizes == [(16, 16), (16, 16)]


def test_leave_one_chip_out_never_predicts_a_chip_with_a_model_trained_on_it(monkeypatch):
    import vhrfm.apps.megafauna as mf

    sat, seals = _imgs(3, 1, 0.3, 2), _imgs(4, 3, 0.3, 3)
    trained_on = []
    real_train = mf.train_detector

    def spy(model, domains, **kw):
        trained_on.append([list(d.rows.path) for d in domains])
        return real_train(model, domains, **kw)

    monkeypatch.setattr(mf, "train_detector", spy)
    monkeypatch.setattr(mf, "build_dense_model", lambda name, n, t, seed, **kw: Segmenter(create_encoder("mobilenetv3_small_anyband"), width=8))
    cfg = {"cross_domain_model": "teacher_frozen", "cross_domain_steps": 2, "radius_m": 1.5, "batch_size": 2, "lr": 1e-3,
           "sigma_m": 0.45, "encoder_lr_scale": 1.0, "min_precision": 0.9}
    r = leave_one_chip_out(sat, None, seals, cfg, None, 0, progress=False)
    assert len(trained_on) == 3
    for i, domains in enumerate(trained_on):
        assert domains == [[p for j, p in enumerate(sat.rows.path) if j != i]]
    assert r["n_gt"] == sat.n_points and 0 <= r["precision"] <= 1 and 0 <= r["ap"] <= 1 and len(r["thresholds"]) == 3
    trained_on.clear()
    r = leave_one_chip_out(sat, seals, seals, cfg, None, 0, progress=False)
    assert all(d[0] == list(seals.rows.path) and len(d) == 2 for d in trained_on)
    assert r["threshold_chosen_on"] == "the degraded-seal validation split"
