"""Multi-sensor: spectral-response mixing, MTF, simulation, histogram matching, AdaBN, the cross-sensor matrix."""

import math

import numpy as np
import pytest
import torch

from vhrfm.adapt.crosssensor import Domain, adabn, cross_sensor_matrix, hist_match, summarise
from vhrfm.adapt.simulate import mtf_sigma, sensor_target, simulate, srf_weights
from vhrfm.errors import VHRFMInputError
from vhrfm.models import create_encoder

RGB_WL, RGB_WD = [660.0, 545.0, 480.0], [60.0, 70.0, 60.0]


def test_srf_weights_identity_mixing_and_impossible_bands():
    np.testing.assert_allclose(srf_weights(RGB_WL, RGB_WD, RGB_WL, RGB_WD).diagonal(), 1.0, atol=0.05)
    pan = sensor_target("worldview3", ("pan",))
    w = srf_weights(RGB_WL, RGB_WD, pan["wavelengths"], pan["widths"])
    assert w.shape == (1, 3) and (w > 0.1).all() and w.sum() == pytest.approx(1.0)
    swir = sensor_target("worldview3", ("swir1",))
    with pytest.raises(VHRFMInputError, match="cannot be simulated"):
        srf_weights(RGB_WL, RGB_WD, swir["wavelengths"], swir["widths"])


def test_mtf_sigma_gives_the_requested_mtf_at_nyquist():
    s = mtf_sigma(0.3)
    assert math.exp(-2 * math.pi**2 * s * s * 0.25) == pytest.approx(0.3)


def test_simulate_gsd_gain_bits_and_errors():
    img = np.full((3, 64, 64), 100.0)
    out = simulate(img, RGB_WL, RGB_WD, 1.0, RGB_WL, RGB_WD, 2.0, gain=8.0, snr=None, bit_depth=11)
    assert out.shape == (3, 32, 32) and np.allclose(out, 800.0)
    clipped = simulate(img * 10, RGB_WL, RGB_WD, 1.0, RGB_WL, RGB_WD, 1.0, gain=8.0, snr=None, bit_depth=11)
    assert clipped.max() == 2047
    noisy = simulate(img, RGB_WL, RGB_WD, 1.0, RGB_WL, RGB_WD, 1.0, snr=50.0, rng=np.random.default_rng(0))
    assert abs(noisy.std() - 2.0) < 0.2  # mean / SNR
    with pytest.raises(VHRFMInputError, match="finer GSD"):
        simulate(img, RGB_WL, RGB_WD, 1.0, RGB_WL, RGB_WD, 0.5)


def _domain(name, raw, y, split, wl=RGB_WL, wd=RGB_WD, gsd=1.0):
    return Domain(name, raw, wl, wd, gsd, y, split, True)


def test_hist_match_maps_onto_the_source_distribution():
    rng = np.random.default_rng(0)
    split = np.array(["train"] * 20)
    src = _domain("a", rng.normal(100, 10, (20, 3, 8, 8)), np.zeros(20, int), split)
    tgt = _domain("b", rng.normal(900, 80, (20, 3, 8, 8)), np.zeros(20, int), split)
    m = hist_match(tgt, src)
    assert abs(m.mean() - 100) < 2 and abs(m.std() - 10) < 1.5


def test_adabn_changes_statistics_not_weights():
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv3_small_anyband").eval()
    dom = _domain("b", np.zeros((4, 3, 32, 32)), np.zeros(4, int), np.array(["train"] * 4))
    x = np.random.default_rng(0).normal(5, 3, (8, 3, 32, 32)).astype(np.float32)
    new = adabn(enc, x, dom)
    bn_old = [m for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    bn_new = [m for m in new.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not torch.allclose(bn_old.running_mean, bn_new.running_mean)
    torch.testing.assert_close(bn_old.weight, bn_new.weight)
    assert not new.training


def test_matrix_and_summary_on_separable_synthetic_domains():
    rng = np.random.default_rng(0)
    n = 60
    y = np.tile([0, 1], n // 2)
    split = np.array(["train"] * 30 + ["val"] * 10 + ["test"] * 20)
    base = rng.normal(100, 5, (n, 3, 32, 32))
    base[y == 1, :, 8:24, 8:24] += 60  # a bright square: the "object"
    a = _domain("a", base, y, split)
    b = _domain("b", base * 8.0, y, split)  # same scene in another DN scale
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv3_small_anyband")
    m = cross_sensor_matrix(enc, [a, b], ("naive", "own_norm"), progress=False)
    assert m["own_norm"]["a->a"] == m["naive"]["a->a"]  # the diagonal is the same by construction
    s = summarise(m, ["a", "b"], adapted="own_norm")
    drop_naive = np.mean([s["in_domain"]["b"] - m["naive"]["a->b"], s["in_domain"]["a"] - m["naive"]["b->a"]])
    assert s["mean_drop_naive"] == pytest.approx(drop_naive)
    # b is a times 8: the naive probe, fit on a's DN scale, loses accuracy on b ...
    assert drop_naive > 0
    # ... while each domain's own statistics map b onto a exactly, so own_norm closes the gap whole
    assert m["own_norm"]["a->b"] == pytest.approx(m["own_norm"]["b->b"])
    assert m["own_norm"]["b->a"] == pytest.approx(m["own_norm"]["a->a"])
    assert m["own_norm"]["a->b"] == pytest.approx(m["own_norm"]["a->a"])
    assert s["mean_drop_adapted"] == pytest.approx(0.0, abs=1e-9)
    assert s["gap_reduction"] == pytest.approx(1.0)


def test_tent_updates_only_batchnorm_affine_and_lowers_the_probe_entropy():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from vhrfm.adapt.crosssensor import features, probe_logits, tent

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    enc = create_encoder("mobilenetv3_small_anyband").eval()
    x = rng.normal(0, 1, (48, 3, 32, 32)).astype(np.float32)
    x[::2, :, 8:24, 8:24] += 2.0
    y = np.tile([1, 0], 24)
    dom = _domain("t", x, y, np.array(["train"] * 48))
    f = features(enc, x, dom)
    scaler = StandardScaler().fit(f)
    clf = LogisticRegression(C=0.01, max_iter=500).fit(scaler.transform(f), y)
    # the probe as a torch function gives sklearn's decision function
    np.testing.assert_allclose(probe_logits(scaler, clf, torch.from_numpy(f).double()).numpy(),
                               clf.decision_function(scaler.transform(f)), rtol=1e-5, atol=1e-6)

    def entropy(e):
        p = torch.sigmoid(probe_logits(scaler, clf, torch.from_numpy(features(e, x, dom)))).clamp(1e-6, 1 - 1e-6)
        return float(-(p * p.log() + (1 - p) * (1 - p).log()).mean())

    new = tent(enc, x, dom, (scaler, clf, 0.01), steps=15, lr=1e-2, batch=48)
    assert entropy(new) < entropy(enc)
    changed = {n for (n, a), (_, b) in zip(enc.named_parameters(), new.named_parameters()) if not torch.equal(a, b)}
    bn = {n for n, m in new.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert changed and all(n.rsplit(".", 1)[0] in bn for n in changed)   # only batch-norm weights / biases moved
    assert not any(p.requires_grad for p in new.parameters()) and not new.training
    for a, b in zip(enc.buffers(), new.buffers()):                       # statistics left as they were
        torch.testing.assert_close(a, b)


def test_a_vit_teacher_takes_simulated_patches_whose_side_is_not_a_patch_multiple():
    """The teacher is chosen on validation and may be a ViT; a simulated domain's patches (here 26 px) are centre-
    cropped to a multiple of its patch size, a convolutional encoder gets them whole."""
    from vhrfm.adapt.crosssensor import embed, features

    rng = np.random.default_rng(0)
    n = 40
    y = np.tile([0, 1], n // 2)
    split = np.array(["train"] * 20 + ["val"] * 8 + ["test"] * 12)
    dom = _domain("wv3_1.24m", rng.normal(100, 5, (n, 3, 26, 26)), y, split, gsd=1.24)
    torch.manual_seed(0)
    vit = create_encoder("vit_nano_p8")
    xb = torch.from_numpy(dom.raw[:4])
    with pytest.raises(ValueError, match="multiple of the patch size"):
        vit(xb, dom.wavelengths, torch.full((4,), dom.gsd), dom.widths)
    with torch.no_grad():
        got = embed(vit, xb, dom)
        assert torch.equal(got, vit(xb[..., 1:25, 1:25], dom.wavelengths, torch.full((4,), dom.gsd), dom.widths))
    assert features(vit, dom.raw, dom).shape == (n, vit.num_features)
    m = cross_sensor_matrix(vit, [dom, _domain("b", dom.raw * 2.0, y, split, gsd=1.24)], ("naive", "own_norm_adabn"),
                            progress=False)
    assert 0.0 <= m["naive"]["wv3_1.24m->b"] <= 1.0
    seen = []
    conv = create_encoder("mobilenetv3_small_anyband").eval()
    conv.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        embed(conv, xb, dom)
    assert seen == [(26, 26)]
    tiny = _domain("tiny", rng.normal(size=(4, 3, 6, 6)), y[:4], split[:4])
    with pytest.raises(ValueError, match="smaller than the encoder's 8 px patch"):
        embed(vit, torch.from_numpy(tiny.raw), tiny)
