from dataclasses import replace

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from vhrfm.apps.segmentation import (at_precision_target, block_folds, choose_threshold, confusion, label_budgets,
                                     load_seg_tiles, pr_curve, precision_target_threshold, scores_from_confusion,
                                     seg_metrics, train_segmenter)
from vhrfm.apps.wildfire import ClassicalIndex, change_indices, spectral_indices
from vhrfm.data.sources import SOURCES, Item, Source
from vhrfm.data.splits import make_splits
from vhrfm.errors import VHRFMInputError
from vhrfm.heads import Segmenter, SMPUNet
from vhrfm.models import create_encoder


def test_metrics_by_hand():
    y = np.array([[[1, 1, 0, 0, 255]]])
    prob = np.array([[[0.9, 0.2, 0.8, 0.1, 0.99]]])
    c = confusion(prob, y, 0.5)
    assert c.tolist() == [[1, 1, 1, 1]]  # the ignored pixel counts nowhere
    s = scores_from_confusion(c)
    assert s["precision"] == 0.5 and s["recall"] == 0.5 and s["f1"] == 0.5 and s["iou"] == pytest.approx(1 / 3)
    m = seg_metrics(prob, y, 0.5, n_boot=50)
    assert m["f1_ci95"][0] <= 0.5 <= m["f1_ci95"][1]


def test_pr_curve_and_threshold_choice():
    rng = np.random.default_rng(0)
    y = (rng.random((4, 32, 32)) < 0.3).astype(np.uint8)
    prob = np.clip(y * 0.6 + rng.random(y.shape) * 0.5, 0, 1)
    curve = pr_curve(prob, y)
    assert curve.recall.is_monotonic_decreasing and curve.recall.iloc[0] == 1.0
    thr = choose_threshold(prob, y, min_precision=0.9)
    # separable: a threshold in the gap between the classes (up to the quantile grid of candidates)
    assert scores_from_confusion(confusion(prob, y, thr))["f1"] > 0.99


def test_threshold_choice_is_the_best_f1_reaching_the_precision_target():
    """Overlapping classes: the chosen threshold's F1 is the best among the candidate thresholds (201 quantiles of the
    scores) whose precision reaches the target, found here by brute force; an unreachable target falls back to the
    best F1 overall, and a target of 0 is plain best F1."""
    rng = np.random.default_rng(1)
    y = (rng.random((6, 32, 32)) < 0.3).astype(np.uint8)
    prob = np.clip(0.35 * y + rng.normal(0.35, 0.15, y.shape), 0, 1)
    y[0, :4] = 255  # ignored pixels take no part
    lab = y != 255
    candidates = np.unique(np.quantile(prob[lab], np.linspace(0, 1, 201)))
    scores = [scores_from_confusion(confusion(prob, y, t)) for t in candidates]
    best_any = max(s["f1"] for s in scores)

    def f1_at(t):
        return scores_from_confusion(confusion(prob, y, t))

    for target in (0.85, 0.9):
        reaching = [s["f1"] for s in scores if s["precision"] >= target]
        assert reaching and max(reaching) < best_any  # the target binds: the unconstrained best is not allowed
        got = f1_at(choose_threshold(prob, y, min_precision=target))
        assert got["precision"] >= target
        assert got["f1"] == pytest.approx(max(reaching))
    assert f1_at(choose_threshold(prob, y, min_precision=0.0))["f1"] == pytest.approx(best_any)
    assert f1_at(choose_threshold(prob, y, min_precision=1.01))["f1"] == pytest.approx(best_any)


def test_precision_target_point_keeps_the_most_recall_reaching_the_target_and_has_no_fall_back():
    """The lowest candidate threshold whose validation precision reaches the target (found by brute force over the
    same 201 candidates): every lower one misses it, and its recall is the largest among those reaching it. On test
    the point is scored at that threshold; an unreachable target gives None values with the same keys."""
    rng = np.random.default_rng(2)
    y = (rng.random((6, 32, 32)) < 0.3).astype(np.uint8)
    prob = np.clip(0.35 * y + rng.normal(0.35, 0.15, y.shape), 0, 1)
    y[1, :3] = 255
    lab = y != 255
    candidates = np.unique(np.quantile(prob[lab], np.linspace(0, 1, 201)))
    scores = {float(t): scores_from_confusion(confusion(prob, y, t)) for t in candidates}
    for target in (0.8, 0.9):
        thr = precision_target_threshold(prob, y, target)
        reaching = [t for t, s in scores.items() if s["precision"] >= target and s["recall"] > 0]
        assert thr == pytest.approx(min(reaching))
        assert scores_from_confusion(confusion(prob, y, thr))["recall"] == pytest.approx(
            max(scores[t]["recall"] for t in reaching))
        assert all(s["precision"] < target for t, s in scores.items() if t < thr)
    # a lower target keeps at least as much recall
    assert precision_target_threshold(prob, y, 0.8) <= precision_target_threshold(prob, y, 0.9)
    # scored on another split at the validation threshold
    y2 = (rng.random((3, 32, 32)) < 0.3).astype(np.uint8)
    prob2 = np.clip(0.35 * y2 + rng.normal(0.35, 0.15, y2.shape), 0, 1)
    r = at_precision_target(prob, y, prob2, y2, 0.9)
    thr = precision_target_threshold(prob, y, 0.9)
    assert r["reached_on_val"] and r["threshold"] == thr
    assert {k: r[k] for k in ("precision", "recall", "f1", "iou")} == scores_from_confusion(confusion(prob2, y2, thr))
    # no fall-back: scores that rank every unburned pixel above every burned one never reach the target
    inverted = np.where(y == 1, 0.2, 0.8)
    assert precision_target_threshold(inverted, y, 0.9) is None
    none = at_precision_target(inverted, y, prob2, y2, 0.9)
    assert set(none) == set(r) and none["threshold"] is None and none["precision"] is None and not none["reached_on_val"]


def test_budgets_are_nested_and_seeded():
    b = label_budgets(48, {"1%": 0.01, "5%": 0.05, "10%": 0.1, "100%": 1.0}, seed=0)
    assert [len(b[k]) for k in ("1%", "5%", "10%", "100%")] == [1, 2, 5, 48]
    assert set(b["1%"]) <= set(b["5%"]) <= set(b["10%"]) <= set(b["100%"])
    assert b == label_budgets(48, {"1%": 0.01, "5%": 0.05, "10%": 0.1, "100%": 1.0}, seed=0)
    assert b != label_budgets(48, {"1%": 0.01, "5%": 0.05, "10%": 0.1, "100%": 1.0}, seed=1)


def test_budgets_with_masks_show_both_classes_from_one_tile():
    fr = {"1%": 0.01, "5%": 0.05, "10%": 0.1, "100%": 1.0}
    masks = np.zeros((48, 8, 8), np.uint8)        # every tile unburned ...
    masks[[7, 30], :4] = 1                        # ... but two, half burned
    masks[30, 4:] = 255                           # tile 30: all its labelled pixels burned (not mixed)
    plain = label_budgets(48, fr, seed=0)
    b = label_budgets(48, fr, seed=0, masks=masks)
    assert b["1%"] == [7]                         # the one tile holding both classes comes first
    assert set(b["1%"]) <= set(b["5%"]) <= set(b["10%"]) <= set(b["100%"]) and len(b["100%"]) == 48
    assert [len(b[k]) for k in fr] == [len(plain[k]) for k in fr]
    # the rest keeps the seeded order: the 5 % budget is the mixed tile plus the plain order's first other tile
    order = np.random.default_rng(0).permutation(48)
    assert b["5%"] == sorted([7, next(int(i) for i in order if i != 7)])
    # no mixed tile at all: the plain seeded order
    assert label_budgets(48, fr, seed=0, masks=np.zeros((48, 8, 8), np.uint8)) == plain


def _block_tiles(shares, tiles_per_block=3, size=10):
    """Tiles of blocks ``b0, b1, ...``: block i's tiles have shares[i] of their labelled pixels positive (the last
    row of every tile ignored)."""
    import pandas as pd

    from vhrfm.apps.segmentation import SegTiles

    y, names = [], []
    for i, s in enumerate(shares):
        for _ in range(tiles_per_block):
            t = np.zeros((size, size), np.uint8)
            t[:-1].flat[:int(round(s * size * (size - 1)))] = 1
            t[-1] = 255
            y.append(t)
            names.append(f"b{i}")
    n = len(y)
    return SegTiles(np.zeros((n, 3, size, size), np.float32), np.stack(y), pd.DataFrame({"block": names}),
                    np.array([665.0, 560.0, 490.0], np.float32), np.array([30.0] * 3, np.float32), 10.0, "test")


def test_block_folds_keep_blocks_whole_and_balance_the_positive_share():
    shares = [i / 20 for i in range(20)][::-1]          # 20 blocks, burned share 0.95 .. 0
    tiles = _block_tiles(shares)
    folds = block_folds(tiles, 5, seed=0)
    assert folds.shape == (60,) and set(folds) == set(range(5))
    per_block = tiles.rows.assign(fold=folds).groupby("block").fold.nunique()
    assert (per_block == 1).all()                       # a block never straddles two folds
    sizes = np.bincount(folds) // 3
    assert sizes.tolist() == [4] * 5
    # stratified: each run of 5 blocks by share holds the 5 folds, so every fold's mean share is within one run's
    # spread (0.2) of the others'; the plain seeded shuffle need not be
    fold_share = [np.mean([shares[int(b[1:])] for b in tiles.rows.block[folds == f].unique()]) for f in range(5)]
    assert max(fold_share) - min(fold_share) < 0.2
    by_rank = {int(b[1:]): f for b, f in zip(tiles.rows.block, folds)}
    for start in range(0, 20, 5):                       # blocks 15..19 are the lowest shares, and so on
        assert sorted(by_rank[i] for i in range(start, start + 5)) == list(range(5))
    assert (block_folds(tiles, 5, seed=0) == folds).all()
    assert not (block_folds(tiles, 5, seed=1) == folds).all()
    plain = block_folds(tiles, 5, seed=0, stratify=False)
    assert (np.bincount(plain) // 3).tolist() == [4] * 5
    uneven = block_folds(_block_tiles(shares[:7], tiles_per_block=1), 3, seed=0)
    assert sorted(np.bincount(uneven).tolist()) == [2, 2, 3]
    with pytest.raises(ValueError, match="k=21"):
        block_folds(tiles, 21, seed=0)
    with pytest.raises(ValueError, match="k=1"):
        block_folds(tiles, 1, seed=0)


def test_spectral_indices_and_change():
    wl = [485.0, 560.0, 665.0, 842.0, 2190.0]
    healthy = np.array([0.05, 0.08, 0.05, 0.40, 0.10])[None, :, None, None] * np.ones((1, 5, 4, 4))
    burned = np.array([0.04, 0.05, 0.07, 0.15, 0.25])[None, :, None, None] * np.ones((1, 5, 4, 4))
    ih, ib = spectral_indices(healthy, wl), spectral_indices(burned, wl)
    assert {"neg_nbr", "neg_ndvi", "darkness", "red_green"} <= set(ih)
    assert (ib["neg_nbr"] > ih["neg_nbr"]).all() and (ib["neg_ndvi"] > ih["neg_ndvi"]).all()
    d = change_indices(healthy, burned, wl)
    assert (d["d_neg_nbr"] > 0).all()
    with pytest.raises(VHRFMInputError):
        change_indices(healthy, burned[:, :3], wl)
    assert set(spectral_indices(healthy[:, :3], wl[:3])) == {"darkness", "red_green"}


@pytest.fixture
def synthetic_vhr_fire(tmp_path, monkeypatch):
    """A 0.5 m, 4-band (Pleiades B, G, R, NIR) post-fire scene with a burn scar mask, registered as a source."""
    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    d = tmp_path / "data" / "wildfire" / "synthetic_vhr"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    h = w = 384
    yy, xx = np.mgrid[:h, :w]
    scar = ((yy - 150) ** 2 + (xx - 220) ** 2) < 110 ** 2
    veg = np.array([300, 500, 350, 2500])[:, None, None]
    burn = np.array([250, 280, 330, 700])[:, None, None]
    img = np.where(scar[None], burn, veg) + rng.normal(0, 40, (4, h, w))
    kw = dict(driver="GTiff", width=w, height=h, crs="EPSG:32611", transform=from_origin(500000, 4200000, 0.5, 0.5))
    with rasterio.open(d / "post.tif", "w", count=4, dtype="uint16", **kw) as dst:
        dst.write(np.clip(img, 0, 4095).astype("uint16"))
    with rasterio.open(d / "mask.tif", "w", count=1, dtype="uint8", **kw) as dst:
        dst.write(scar.astype("uint8")[None])
    clouds = np.zeros((1, h, w), "uint8")
    clouds[:, :40, :40] = 1
    with rasterio.open(d / "clouds.tif", "w", count=1, dtype="uint8", **kw) as dst:
        dst.write(clouds)
    item = Item("synthetic_vhr", "wildfire/synthetic_vhr/post.tif", "ms", ("blue", "green", "red", "nir"), 0.5, "scene",
                mask="wildfire/synthetic_vhr/mask.tif", ignore="wildfire/synthetic_vhr/clouds.tif")
    src = Source("synthetic_vhr", "wildfire", "synthetic", "pleiades", "test", "test", "test", "burned mask", False,
                 lambda _f: [item])
    monkeypatch.setitem(SOURCES, "synthetic_vhr", src)
    from vhrfm.data.sources import _cached_items

    _cached_items.cache_clear()
    yield item
    _cached_items.cache_clear()


def test_vhr_scene_with_mask_plugs_in_unchanged(synthetic_vhr_fire):
    from vhrfm.config import data_dir
    from vhrfm.data.normalize import band_statistics

    splits = make_splits([synthetic_vhr_fire], tile_size=96, overlap=16, block_size=128,
                         fractions={"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    with rasterio.open(data_dir() / synthetic_vhr_fire.path) as s:
        arr = s.read()
    st = band_statistics([(arr, np.ones(arr.shape[1:], bool))])
    stats = {"synthetic_vhr/ms": {**st, "bands": ["blue", "green", "red", "nir"]}}
    tiles = load_seg_tiles("synthetic_vhr", splits, stats, tile_size=96, progress=False)
    assert tiles.sensor == "pleiades" and tiles.gsd == 0.5 and tiles.X.shape[1:] == (4, 96, 96)
    assert set(np.unique(tiles.Y)) <= {0, 1, 255} and (tiles.Y == 255).any() and (tiles.Y == 1).any()
    train, test = tiles.split("train"), tiles.split("test")
    assert len(train) and len(test)
    # the classical index separates the synthetic scar (NIR drop)
    clf = ClassicalIndex(st["mean"], st["std"]).fit(train)
    assert clf.name in ("neg_ndvi", "darkness")
    m = seg_metrics(clf.predict(tiles), tiles.Y, choose_threshold(clf.predict(tiles), tiles.Y), n_boot=0)
    assert m["f1"] > 0.9
    # and a learned model trains on it through the same code
    model = Segmenter(create_encoder("resnet18_anyband"), freeze_encoder=True)
    hist = train_segmenter(model, train, steps=3, batch_size=2, lr=1e-3, crop=64, seed=0, progress=False)
    assert len(hist) == 3 and np.isfinite(hist).all()


@pytest.mark.parametrize("name", ["vit_nano_p8", "resnet18_anyband"])
def test_segmenter_output_size_and_frozen_encoder(name):
    import torch

    enc = create_encoder(name)
    model = Segmenter(enc, freeze_encoder=True)
    x = torch.randn(2, 3, 64, 64)
    y = model(x, [665.0, 560.0, 490.0], torch.tensor([1.0, 1.0]))
    assert y.shape == (2, 1, 64, 64)
    y.sum().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert any(p.grad is not None for p in model.head.parameters())
    unet = SMPUNet(in_channels=3)
    assert unet(torch.randn(1, 3, 50, 70)).shape == (1, 1, 50, 70)


def test_pretraining_ablation_trains_each_seed_once_and_reuses_the_main_table(monkeypatch):
    """Seed 0 at the default learning-rate scale comes from the main table; every other (variant, seed) is trained
    once, with the seed passed to both the initial weights and the training crops; mean and sd over seeds."""
    from types import SimpleNamespace

    import vhrfm.apps.wildfire as wf

    rng = np.random.default_rng(0)
    y = (rng.random((6, 8, 8)) < 0.3).astype(np.int64)

    class Tiles(SimpleNamespace):
        def subset(self, idx):
            return self

    tiles = Tiles(X=np.zeros((6, 3, 8, 8), np.float32), Y=y)
    built, trained = [], []
    monkeypatch.setattr(wf, "build_dense_model", lambda name, n, teacher, s, **kw: built.append((name, s)) or name)
    monkeypatch.setattr(wf, "train_segmenter", lambda model, sub, seed, encoder_lr_scale, **kw:
                        trained.append((model, seed, encoder_lr_scale)))
    monkeypatch.setattr(wf, "predict_probs", lambda model, t, tta=False:
                        np.clip(t.Y + 0.1 * len(trained), 0, 1).astype(np.float32))
    main = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "val": {"f1": 0.6}}
    spec = {"budget": "10%", "seeds": [0, 1], "variants": [{"name": "u", "model": "unet_scratch"},
                                                          {"name": "t_fast", "model": "teacher_unet", "encoder_lr_scale": 1.0}]}
    cfg = {"encoder_lr_scale": 0.1, "steps": 1, "batch_size": 1, "lr": 1e-3, "crop": 8, "min_precision": 0.0}
    out = wf.pretraining_ablation(spec, cfg, tiles, tiles, tiles, {"10%": [0]}, {"unet_scratch": {"10%": main}},
                                  "teacher.safetensors", seed=0, progress=False)
    assert built == [("unet_scratch", 1), ("teacher_unet", 0), ("teacher_unet", 1)]
    assert trained == [("unet_scratch", 1, 1.0), ("teacher_unet", 0, 1.0), ("teacher_unet", 1, 1.0)]
    u = out["variants"]["u"]
    assert [r["from"] for r in u["runs"]] == ["main table", "trained here"] and u["runs"][0]["f1"] == 0.5
    assert u["runs"][1]["f1"] == 1.0  # perfect predictions on the fake tiles
    assert u["f1_mean"] == pytest.approx(0.75) and u["f1_sd"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert out["variants"]["t_fast"]["encoder_lr_scale"] == 1.0


def _tiles(x, y=None):
    import pandas as pd

    from vhrfm.apps.segmentation import SegTiles

    y = np.zeros((len(x), *x.shape[-2:]), np.uint8) if y is None else y
    return SegTiles(x, y, pd.DataFrame({"split": ["test"] * len(x)}), np.array([665.0, 560.0, 490.0], np.float32),
                    np.array([30.0, 30.0, 30.0], np.float32), 10.0, "test")


class _Conv:
    """A fixed 3x3 convolution with an asymmetric kernel (not D4-equivariant) standing in for a segmenter."""

    def __init__(self, seed=0, pointwise=False):
        import torch

        g = torch.Generator().manual_seed(seed)
        k = 1 if pointwise else 3
        self.conv = torch.nn.Conv2d(3, 1, k, padding=k // 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
        self.calls = 0

    def eval(self):
        return self

    def __call__(self, x, wl, gsd, wd):
        self.calls += 1
        return self.conv(x)


def test_d4_inverse_undoes_each_element_and_the_elements_differ():
    import torch

    from vhrfm.apps.segmentation import D4, d4_apply, d4_invert

    t = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 5, 5)
    images = {tuple(d4_apply(t, k, f).flatten().tolist()) for k, f in D4}
    assert len(D4) == 8 and len(images) == 8  # eight distinct elements
    for k, f in D4:
        assert torch.equal(d4_invert(d4_apply(t, k, f), k, f), t)


def test_d4_test_time_augmentation_is_the_mean_over_the_eight_views_mapped_back(d4_reference):
    """Against a reference written with numpy's rot90 / flip: for a model that is not D4-equivariant (an asymmetric
    3x3 convolution) TTA differs from the plain prediction and equals the mean of the 8 back-mapped views; the
    result is equivariant (TTA of a rotated tile = the rotated TTA); for a pointwise model TTA changes nothing."""
    import torch

    from vhrfm.apps.segmentation import predict_probs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3, 12, 12)).astype(np.float32)
    model = _Conv()
    tta = predict_probs(model, _tiles(x), batch_size=2, tta=True)
    plain = predict_probs(model, _tiles(x), batch_size=2)
    with torch.no_grad():
        ref = d4_reference(lambda v: torch.sigmoid(model.conv(torch.from_numpy(v)))[:, 0].numpy(), x)
    assert np.allclose(tta, ref, atol=1e-6)
    assert not np.allclose(tta, plain, atol=1e-3)
    rotated = predict_probs(model, _tiles(np.rot90(x, 1, axes=(-2, -1)).copy()), tta=True)
    assert np.allclose(rotated, np.rot90(tta, 1, axes=(-2, -1)), atol=1e-6)
    pointwise = _Conv(pointwise=True)
    assert np.allclose(predict_probs(pointwise, _tiles(x), tta=True), predict_probs(pointwise, _tiles(x)), atol=1e-6)


def test_seed_ensemble_scores_the_mean_probability_and_needs_the_main_tables_model(monkeypatch):
    """With ``ensemble``: the seeds of a variant scored as one model are the mean of their probabilities (plain and
    with TTA), compared here with score_probs on means computed by hand; the main table's member is its probabilities
    (not predicted again) and its trained model (for TTA), and without them the ensemble is an error, not a silent
    two-seed ensemble."""
    import vhrfm.apps.wildfire as wf

    rng = np.random.default_rng(1)
    y = (rng.random((6, 8, 8)) < 0.4).astype(np.uint8)
    tiles = _tiles(np.zeros((6, 3, 8, 8), np.float32), y)
    noise = {s: rng.random(y.shape).astype(np.float32) for s in (0, 1, 2)}
    probs = {(s, tta): np.clip(0.5 * y + noise[s] * (0.6 if tta else 0.8), 0, 1).astype(np.float32)
             for s in noise for tta in (False, True)}
    monkeypatch.setattr(wf, "fit_dense", lambda name, sub, teacher, s, cfg, **kw: (s, []))

    def predict(model, t, tta=False):
        assert model != 0 or tta, "the main table's probabilities are passed, not predicted again"
        return probs[(model, tta)]

    monkeypatch.setattr(wf, "predict_probs", predict)
    cfg = {"encoder_lr_scale": 1.0, "steps": 1, "min_precision": 0.0, "n_boot": 20, "precision_target": 0.9}
    main = wf.score_probs(probs[(0, False)], tiles, probs[(0, False)], tiles, 0.0)
    spec = {"budget": "10%", "seeds": [0, 1, 2], "ensemble": True, "variants": [{"name": "u", "model": "unet_scratch"}]}
    out = wf.pretraining_ablation(spec, cfg, tiles, tiles, tiles, {"10%": [0]}, {"unet_scratch": {"10%": main}},
                                  "t", seed=0, progress=False, trained={("unet_scratch", "10%"): 0},
                                  probs={("unet_scratch", "10%"): (probs[(0, False)], probs[(0, False)])})
    u = out["variants"]["u"]
    for tta, key in ((False, "ensemble"), (True, "ensemble_tta")):
        mean = np.mean([probs[(s, tta)] for s in (0, 1, 2)], axis=0)
        ref = wf.score_probs(mean, tiles, mean, tiles, 0.0, 20, 0, 0.9)
        assert u[key]["members"] == 3
        assert u[key]["f1"] == pytest.approx(ref["f1"]) and u[key]["threshold"] == pytest.approx(ref["threshold"])
        assert u[key]["at_precision_target"] == ref["at_precision_target"]
    assert [r["f1_tta"] for r in u["runs"]] == pytest.approx(
        [wf.score_probs(probs[(s, True)], tiles, probs[(s, True)], tiles, 0.0)["f1"] for s in (0, 1, 2)])
    assert u["precision_tta_mean"] == pytest.approx(np.mean([r["precision_tta"] for r in u["runs"]]))
    for kw in ({}, {"trained": {("unet_scratch", "10%"): 0}}):
        with pytest.raises(ValueError, match="main table's trained"):
            wf.pretraining_ablation(spec, cfg, tiles, tiles, tiles, {"10%": [0]}, {"unet_scratch": {"10%": main}},
                                    "t", seed=0, progress=False, **kw)


def test_lowest_threshold_reaching_keeps_the_most_recall_and_has_no_fall_back():
    import pandas as pd

    from vhrfm.apps.segmentation import lowest_threshold_reaching

    c = pd.DataFrame({"threshold": [0.2, 0.5, 0.8, 0.95], "precision": [0.6, 0.91, 0.95, 1.0],
                      "recall": [1.0, 0.7, 0.4, 0.0]})
    assert lowest_threshold_reaching(c, 0.9) == 0.5
    assert lowest_threshold_reaching(c, 0.99) is None  # precision 1.0 only where recall is 0
    assert lowest_threshold_reaching(c.iloc[:0], 0.9) is None


def test_dice_term_is_bce_plus_weighted_soft_dice_on_labelled_pixels():
    """``dice_weight`` adds w x (1 - 2 sum(p y) / (sum p + sum y)) over the batch's labelled pixels to the BCE: checked
    on the first step's loss with a model whose output is one learnable logit (so every D4 view and crop gives the
    same pixels' predictions) and tiles whose labels (with ignored pixels) are the same D4-invariant pattern."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.z = nn.Parameter(torch.tensor(0.4))

        def forward(self, x, *args):
            return self.z.expand(x.shape[0], 1, *x.shape[-2:])

    y = np.zeros((8, 8), np.uint8)
    y[2:6, 2:6] = 1
    y[0, :], y[-1, :], y[:, 0], y[:, -1] = 255, 255, 255, 255
    tiles = _tiles(np.zeros((3, 3, 8, 8), np.float32), np.repeat(y[None], 3, 0))
    lab = y != 255
    t = torch.from_numpy((y[lab] == 1).astype(np.float32))
    p = torch.sigmoid(torch.tensor(0.4)).expand(t.shape)
    bce = float(F.binary_cross_entropy(p, t))
    dice = 1.0 - float(2 * (p * t).sum() / (p.sum() + t.sum()))
    for w in (0.0, 0.5, 2.0):
        hist = train_segmenter(Const(), tiles, steps=1, batch_size=2, lr=1e-3, crop=8, seed=0, dice_weight=w,
                               progress=False)
        assert hist[0] == pytest.approx(bce + w * dice, rel=1e-5)


def test_fit_model_is_the_index_or_the_learned_model_with_the_tasks_settings(monkeypatch, tmp_path):
    """``fit_model`` (the chapter's and its studies' one way to train a model): ``classical`` fits the spectral index
    with the task's own normalisation entry (another entry gives other probabilities), any other name goes to
    ``fit_dense`` with the task's teacher and settings, and its ``predict`` is ``predict_probs`` of that model."""
    import vhrfm.apps.wildfire as wf

    rng = np.random.default_rng(0)
    y = (rng.random((4, 8, 8)) < 0.5).astype(np.uint8)
    x = (rng.normal(size=(4, 3, 8, 8)) - 1.5 * y[:, None]).astype(np.float32)  # burned is dark
    tiles = _tiles(x, y)
    stats = {"a/rgb": {"mean": [80.0, 70.0, 60.0], "std": [20.0, 20.0, 20.0]},
             "b/rgb": {"mean": [10.0, 200.0, 5.0], "std": [1.0, 90.0, 1.0]}}
    cfg = {"steps": 3}
    task = wf.WildfireTask(cfg=cfg, seed=0, train=tiles, val=tiles, test=tiles, budgets={}, stats=stats,
                           teacher=tmp_path / "teacher.safetensors", tiles=tiles, norm_key="a/rgb")
    clf, predict, hist = wf.fit_model("classical", tiles, task, 0)
    want = ClassicalIndex(stats["a/rgb"]["mean"], stats["a/rgb"]["std"]).fit(tiles)
    assert hist == {"index": want.name} and clf.name == want.name
    np.testing.assert_array_equal(predict(tiles), want.predict(tiles))
    other = wf.fit_model("classical", tiles, replace(task, norm_key="b/rgb"), 0)[1](tiles)
    assert not np.allclose(other, predict(tiles))

    calls = []
    monkeypatch.setattr(wf, "fit_dense", lambda *a, **kw: calls.append((a, kw)) or ("net", [0.5, 0.25]))
    monkeypatch.setattr(wf, "predict_probs", lambda m, t: np.full(t.Y.shape, 0.7 if m == "net" else 0.0))
    net, predict, hist = wf.fit_model("unet_scratch", tiles, task, 3, kd={"w": 1}, progress=False, desc="d")
    (args, kw), = calls
    assert args == ("unet_scratch", tiles, task.teacher, 3, cfg) and kw["kd"] == {"w": 1} and kw["desc"] == "d"
    assert net == "net" and hist == {"loss": [0.5, 0.25]} and (predict(tiles) == 0.7).all()


def test_load_task_is_what_the_chapter_trained_on(real_data):
    """The studies start from ``load_task``: on the smoke profile it gives the chapter's own training tiles and
    label budgets, as the wildfire stage recorded them (its budgets.json)."""
    import json

    from vhrfm.apps.wildfire import load_task
    from vhrfm.config import models_dir, results_dir

    rec = json.loads((results_dir("smoke") / "wildfire" / "budgets.json").read_text())
    t = load_task("smoke", progress=False)
    assert t.train.rows[["path", "row_off", "col_off"]].values.tolist() == rec["train_tiles"]
    assert {b: [int(i) for i in idx] for b, idx in t.budgets.items()} == rec["budgets"]
    assert set(t.tiles.rows.split) == {"train", "val", "test"} and len(t.val) and len(t.test)
    assert t.teacher == models_dir("smoke") / "teacher.safetensors" and t.cfg["budgets"].keys() == t.budgets.keys()
    # and its normalisation entry is the one the chapter's task-model cards carry
    index = json.loads((models_dir("smoke") / "wildfire" / "index.json").read_text())
    card = json.loads((models_dir("smoke") / "wildfire" / f"{index['default']}.json").read_text())
    assert card["norm"] == {"key": t.norm_key, **{k: list(map(float, t.norm_entry[k])) for k in ("mean", "std")}}
