"""Megafauna detection: degradation, heat-map targets, peak decoding, matching, AP by hand, the blob baseline,
training on synthetic blobs, and the real data loaders."""

import numpy as np
import pandas as pd
import pytest
import torch

from vhrfm.apps.megafauna import (BlobDetector, DetImages, Scored, average_precision, choose_threshold, decode, degrade,
                                  det_metrics, find_peaks, focal_heatmap_loss, heatmap_targets,
                                  load_beluga_images, load_seal_images, match_image, predict_heat, score_detections,
                                  train_detector)
from vhrfm.apps.segmentation import label_budgets


def test_degrade_is_an_area_average():
    x = np.arange(2 * 25 * 26, dtype=np.float32).reshape(2, 25, 26)
    d = degrade(x, 12)
    assert d.shape == (2, 2, 2)
    assert d[1, 1, 0] == pytest.approx(x[1, 12:24, 0:12].mean())


def test_heatmap_peaks_and_decoding():
    pts = [np.array([[5.0, 7.0], [20.0, 3.0]], np.float32)]
    h = heatmap_targets(pts, 32, 1.0)[0]
    assert h[5, 7] == pytest.approx(1.0) and h[20, 3] == pytest.approx(1.0) and h[12, 12] < 1e-6
    h[20, 3] = 0.8
    peaks = find_peaks(h, min_score=0.5)
    assert peaks[:, :2].tolist() == [[5, 7], [20, 3]] and peaks[1, 2] == pytest.approx(0.8)
    valid = np.ones_like(h, bool)
    valid[:10] = False
    assert find_peaks(h, valid, min_score=0.5)[:, :2].tolist() == [[20, 3]]


def test_matching_is_greedy_one_to_one_and_ignores_uncertain():
    dets = np.array([[10, 10, 0.9], [11, 10, 0.8], [30, 30, 0.7], [50, 50, 0.6]], np.float32)
    gt = np.array([[10.5, 10.0]], np.float32)
    ignore = np.array([[30.0, 31.0]], np.float32)
    assert match_image(dets, gt, ignore, radius_px=3).tolist() == [1, 0, -1, 0]


def test_average_precision_and_threshold_by_hand():
    s = Scored(np.array([0.9, 0.8, 0.7], np.float32), np.array([1, 0, 1], np.int8), np.zeros(3, np.int64), np.array([2]))
    # PR points (r, p): (0.5, 1), (0.5, 0.5), (1, 2/3) -> AP = 0.5 * 1 + 0.5 * 2/3
    assert average_precision(s) == pytest.approx(0.5 + 1 / 3)
    assert choose_threshold(s, 0.0) == pytest.approx(0.7)  # F1 0.8 at 0.7 vs 0.667 at 0.9
    assert choose_threshold(s, 0.9) == pytest.approx(0.9)  # only 0.9 reaches precision 0.9
    m = det_metrics(s, 0.7, n_boot=20)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0 and m["count_mae"] == 1.0


def _synthetic(n=24, size=32, bright=True, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.2, (n, 3, size, size)).astype(np.float32)
    pts = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        p = rng.uniform(4, size - 4, (int(rng.integers(1, 4)), 2)).astype(np.float32)
        for r, c in p:
            X[i] += (1 if bright else -1) * 2.0 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 2.0)
        pts.append(p)
    return DetImages(X, np.ones((n, size, size), bool), pts, [np.zeros((0, 2), np.float32)] * n, np.full(n, 0.3),
                     pd.DataFrame({"split": ["train"] * n}), np.array([665.0, 560.0, 490.0], np.float32),
                     np.array([30.0, 35.0, 65.0], np.float32), "test")


def test_blob_detector_finds_synthetic_animals_and_picks_polarity():
    imgs = _synthetic(bright=False)
    det = BlobDetector(size_m=0.7, radius_m=0.6).fit(imgs)
    assert det.polarity in ("dark", "abs")
    s = score_detections(decode(det.heat(imgs), imgs), imgs, 0.6)
    assert average_precision(s) > 0.9


def test_detector_training_lowers_the_loss():
    from vhrfm.heads import Segmenter
    from vhrfm.models import create_encoder

    import copy

    imgs, held_out = _synthetic(n=16), _synthetic(n=16, seed=1)
    torch.manual_seed(0)
    model = Segmenter(create_encoder("mobilenetv3_small_anyband"), width=16)
    untrained = copy.deepcopy(model)
    hist = train_detector(model, imgs, steps=30, batch_size=8, lr=3e-3, sigma_m=0.3, seed=0, progress=False)
    assert np.mean(hist[-5:]) < np.mean(hist[:5])
    heat = predict_heat(model, imgs)
    assert heat.shape == (16, 32, 32) and 0 <= heat.min() and heat.max() <= 1

    # the loss falls partly by moving the output bias; the detector must also have learnt where the animals are,
    # on images it did not train on (the untrained one, near the heat-map prior everywhere, finds almost none)
    def ap(m):
        return average_precision(score_detections(decode(predict_heat(m, held_out), held_out, 0.0), held_out, 0.6))

    assert ap(untrained) < 0.2 and ap(model) > 0.6  # 0.89 measured here


def test_heat_map_tta_is_the_mean_over_d4_turned_back_and_zero_outside_valid(d4_reference):
    from dataclasses import replace

    from vhrfm.heads import Segmenter
    from vhrfm.models import create_encoder

    imgs = _synthetic(n=3, size=32)
    imgs.valid[0, :, 20:] = False
    torch.manual_seed(0)
    model = Segmenter(create_encoder("mobilenetv3_small_anyband"), width=16).eval()
    plain, tta = predict_heat(model, imgs, batch_size=2), predict_heat(model, imgs, batch_size=2, tta=True)
    ref = d4_reference(lambda x: predict_heat(model, replace(imgs, X=x, valid=np.ones_like(imgs.valid))), imgs.X)
    np.testing.assert_allclose(tta, ref * imgs.valid, atol=1e-6)
    assert (tta[0, :, 20:] == 0).all() and np.abs(tta - plain).max() > 1e-4


def test_focal_loss_is_lower_for_the_right_heatmap():
    t = torch.from_numpy(heatmap_targets([np.array([[8.0, 8.0]])], 16, 1.0))
    v = torch.ones_like(t, dtype=torch.bool)
    good = torch.logit(t.clamp(1e-3, 1 - 1e-3))
    assert focal_heatmap_loss(good, t, v) < focal_heatmap_loss(torch.zeros_like(t), t, v)


def test_budgets_nested():
    b = label_budgets(100, {"10%": 0.1, "25%": 0.25, "100%": 1.0}, 0)
    assert set(b["10%"]) <= set(b["25%"]) <= set(b["100%"]) and len(b["100%"]) == 100


def test_real_loaders(smoke_splits):
    df, stats = smoke_splits
    seals = load_seal_images(df, stats, progress=False)
    assert seals.X.shape[1:] == (3, 48, 48) and seals.gsd[0] == pytest.approx(0.3)
    assert set(seals.rows.split) <= {"train", "val", "test"} and seals.n_points > 0
    # published splits are kept and parent photos never cross splits
    assert seals.rows.groupby("group").split.nunique().max() == 1
    for pts in seals.points:
        assert (pts >= 0).all() and (pts < 42).all()
    sat = load_beluga_images(stats, df)
    assert len(sat) == 5 and sat.X.shape[1] == 1 and sat.n_points == 12 and sum(len(i) for i in sat.ignore) == 2
    assert sat.wavelengths.shape == (1,)


def test_the_precision_target_point_keeps_the_most_recall_reaching_the_target_and_has_no_fall_back():
    from vhrfm.apps.megafauna import at_precision_target, precision_target_threshold

    # scores 0.9 tp, 0.8 tp, 0.7 fp, 0.6 tp, 0.5 fp; 4 labelled animals
    val = Scored(np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32), np.array([1, 1, 0, 1, 0], np.int8),
                 np.zeros(5, np.int64), np.array([4]))
    # precision 1, 1, 0.667, 0.75, 0.6: the lowest threshold reaching 0.9 is 0.8 (recall 0.5), not 0.9 (0.25)
    assert precision_target_threshold(val, 0.9) == pytest.approx(0.8)
    assert precision_target_threshold(val, 0.7) == pytest.approx(0.6)
    # never reached: no threshold, and the test point says so instead of falling back to the best F1
    noisy = Scored(np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int8), np.zeros(2, np.int64), np.array([3]))
    assert precision_target_threshold(noisy, 0.9) is None
    r = at_precision_target(noisy, val, 0.9)
    assert r["reached_on_val"] is False and r["recall"] is None
    reached = at_precision_target(val, val, 0.9)
    assert set(r) == set(reached) and all(r[k] is None for k in ("precision", "recall", "f1", "tp", "fp", "n_gt"))
    # reached: the val threshold is applied to the test detections
    test = Scored(np.array([0.95, 0.85, 0.75], np.float32), np.array([1, 0, 1], np.int8), np.zeros(3, np.int64), np.array([2]))
    r = at_precision_target(val, test, 0.9)
    assert r["threshold"] == pytest.approx(0.8) and r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(0.5)


def test_prior_ablation_retrains_with_the_default_bias_through_the_main_loops_helpers(monkeypatch):
    """The "without prior" run is built by the same helper as the main table's with only the output prior changed
    (None), same seed and encoder learning rate, and scored by the same val-threshold / test helper; the "with prior"
    side is the main table's entry, and the gains are their differences."""
    import vhrfm.apps.megafauna as mf

    imgs = _synthetic(n=8, size=32)
    built, trained = [], []
    monkeypatch.setattr(mf, "build_dense_model", lambda name, n, teacher, seed, student=None, output_prior=None:
                        built.append((name, n, seed, output_prior)) or name)
    monkeypatch.setattr(mf, "train_detector", lambda model, sub, seed, encoder_lr_scale, **kw:
                        trained.append((model, len(sub), seed, encoder_lr_scale)) or [])
    monkeypatch.setattr(mf, "predict_heat", lambda model, d: mf.heatmap_targets(d.points, d.X.shape[-1], 1.0))
    cfg = {"prior_ablation": {"models": ["teacher_frozen"], "budget": "50%"}, "heatmap_prior": 0.1, "steps": 3,
           "batch_size": 2, "lr": 1e-3, "sigma_m": 0.45, "encoder_lr_scale": 0.5, "radius_m": 0.6, "min_precision": 0.0,
           "n_boot": 0, "precision_target": None}
    main = {"teacher_frozen": {"50%": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "ap": 0.4}}}
    out = mf.prior_ablation(cfg, imgs, imgs, imgs, {"50%": [0, 1, 2, 3]}, main, "teacher.safetensors", seed=7,
                            student=None, progress=False)
    assert built == [("teacher_frozen", 3, 7, None)]
    assert trained == [("teacher_frozen", 4, 7, 0.5)]
    r = out["models"]["teacher_frozen"]
    assert r["without_prior"]["f1"] == pytest.approx(1.0) and r["without_prior"]["ap"] == pytest.approx(1.0)
    assert r["with_prior"]["f1"] == 0.5 and r["f1_gain"] == pytest.approx(-0.5) and r["ap_gain"] == pytest.approx(-0.6)
    with pytest.raises(ValueError, match="not in the main run"):
        mf.prior_ablation({**cfg, "prior_ablation": {"models": ["unet_scratch"], "budget": "50%"}}, imgs, imgs, imgs,
                          {"50%": [0]}, main, "t", seed=7, student=None, progress=False)


def test_load_task_is_what_the_chapter_trained_on(real_data):
    """The studies start from ``load_task``: on the smoke profile it gives the chapter's own training images and
    label budgets, as the megafauna stage recorded them (its budgets.json), and the five WorldView-3 chips."""
    import json

    from vhrfm.apps.megafauna import load_task
    from vhrfm.config import models_dir, results_dir

    rec = json.loads((results_dir("smoke") / "megafauna" / "budgets.json").read_text())
    t = load_task("smoke", progress=False)
    assert t.train.rows.path.tolist() == rec["train_images"]
    assert {b: [int(i) for i in idx] for b, idx in t.budgets.items()} == rec["budgets"]
    assert len(t.train) + len(t.val) + len(t.test) == len(t.seals) and len(t.sat) == 5
    assert t.teacher == models_dir("smoke") / "teacher.safetensors"
