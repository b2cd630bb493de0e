"""vhrfm.ssl.views: batch-wide, device-side views with the values of the per-sample loops they replaced.

The reference functions below are the loops as they were up to ff5370f (one sample at a time, on the CPU): the
cpu profile's pretraining was made with them, so the views must keep their values to keep its results.
"""

import pytest
import torch
import torch.nn.functional as F

from vhrfm.ssl import views


def ref_d4(x, g):
    out = torch.empty_like(x)
    ks = torch.randint(0, 4, (x.shape[0],), generator=g)
    flips = torch.randint(0, 2, (x.shape[0],), generator=g)
    for i in range(x.shape[0]):
        xi = torch.rot90(x[i], int(ks[i]), dims=(-2, -1))
        out[i] = xi.flip(-1) if flips[i] else xi
    return out


def ref_resized_crop(x, gsd, out, scale, g):
    b, _, h, w = x.shape
    s = float(torch.empty(1).uniform_(*scale, generator=g))
    side = max(4, min(h, w, round(out * s)))
    rows = torch.randint(0, h - side + 1, (b,), generator=g)
    cols = torch.randint(0, w - side + 1, (b,), generator=g)
    crops = torch.stack([x[i, :, r:r + side, c:c + side] for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))])
    if side != out:
        crops = F.interpolate(crops, size=(out, out), mode="area" if side > out else "bilinear", align_corners=None if side > out else False)
    return crops, gsd * (side / out)


def ref_spectral_jitter(x, strength, g):
    if strength <= 0:
        return x
    b, c = x.shape[:2]
    gain = 1 + strength * torch.randn(b, c, 1, 1, generator=g)
    offset = strength * torch.randn(b, c, 1, 1, generator=g)
    return x * gain + offset


def use_reference_loops(monkeypatch):
    """Make :mod:`vhrfm.ssl.views` use the per-sample reference loops above for the rest of the test."""
    monkeypatch.setattr(views, "d4", ref_d4)
    monkeypatch.setattr(views, "resized_crop", ref_resized_crop)
    monkeypatch.setattr(views, "spectral_jitter", ref_spectral_jitter)


def _pair(fn_ref, fn_new, *args, seed=0):
    return fn_ref(*args, torch.Generator().manual_seed(seed)), fn_new(*args, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d4_matches_the_per_sample_loop(seed):
    x = torch.randn(33, 3, 9, 9)
    ref, new = _pair(ref_d4, views.d4, x, seed=seed)
    assert torch.equal(ref, new)
    assert not torch.equal(new, x)


@pytest.mark.parametrize("bands", [1, 4])
@pytest.mark.parametrize("scale", [(0.6, 1.4), (1.0, 1.0), (0.3, 0.5), (1.5, 2.0)])
def test_resized_crop_matches_the_per_sample_loop(scale, bands):
    x = torch.randn(17, bands, 40, 44)
    gsd = torch.rand(17) + 0.3
    (ref, gref), (new, gnew) = _pair(ref_resized_crop, views.resized_crop, x, gsd, 24, scale)
    assert new.shape == ref.shape == (17, bands, 24, 24)
    assert torch.equal(ref, new) and torch.equal(gref, gnew)
    # the same memory layout too, not only the same values: the convolutions round by layout (one band: a
    # permuted gather passed for contiguous with channels-last strides, and training drifted in the 7th digit)
    assert new.stride() == ref.stride()


def test_spectral_jitter_and_the_generator_state_match():
    x = torch.randn(8, 5, 6, 6)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(ref_spectral_jitter(x, 0.1, ga), views.spectral_jitter(x, 0.1, gb))
    assert views.spectral_jitter(x, 0.0, gb) is x
    # the same number of draws: the next draw agrees too, so a whole view sequence stays the same
    assert torch.equal(torch.rand(4, generator=ga), torch.rand(4, generator=gb))


def test_make_view_is_the_view_of_the_per_sample_loops(monkeypatch):
    x, wl, wd, gsd = torch.randn(12, 4, 48, 48), torch.tensor([490.0, 560, 665, 842]), torch.full((4,), 60.0), torch.ones(12)
    g = torch.Generator().manual_seed(5)
    new = [views.make_view(x, wl, wd, gsd, out=32, g=g) for _ in range(3)]
    use_reference_loops(monkeypatch)
    g = torch.Generator().manual_seed(5)
    ref = [views.make_view(x, wl, wd, gsd, out=32, g=g) for _ in range(3)]
    for a, b in zip(ref, new):
        assert torch.equal(a.image, b.image) and torch.equal(a.wavelengths, b.wavelengths) and torch.equal(a.gsd, b.gsd)
        assert a.image.stride() == b.image.stride()


def test_a_training_step_is_that_of_the_per_sample_loops(monkeypatch):
    """The whole step (views, encoder, loss, gradients) on a one-band and a three-band batch: bit for bit."""
    import numpy as np

    from vhrfm.ssl.corpus import Corpus
    from vhrfm.ssl.run import method_config
    from vhrfm.ssl.train import build_objective, step_loss

    rng = np.random.default_rng(0)
    corpus = Corpus.from_arrays({"ms": (rng.normal(size=(10, 3, 40, 40)), [490, 560, 660], [60, 60, 60], 0.5),
                                 "pan": (rng.normal(size=(10, 1, 40, 40)), [600], [300], 0.5)})
    objective, cfg = method_config("smoke", "contrastive_resnet18")

    def run():
        out = []
        for p in corpus.products:
            torch.manual_seed(0)
            model = build_objective(objective, cfg)
            x = torch.from_numpy(p.crops[:6])
            batch = (x, torch.from_numpy(p.wavelengths), torch.from_numpy(p.widths), torch.full((6,), p.gsd), p.key)
            loss = step_loss(model, objective, batch, cfg, torch.Generator().manual_seed(1), torch.device("cpu"))["loss"]
            loss.backward()
            out.append((loss.detach(), [q.grad.clone() for q in model.parameters() if q.grad is not None]))
        return out

    new = run()
    use_reference_loops(monkeypatch)
    ref = run()
    for (ln, gn), (lr, gr) in zip(new, ref):
        assert torch.equal(ln, lr) and all(torch.equal(a, b) for a, b in zip(gn, gr))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_views_stay_on_the_gpu():
    x = torch.randn(6, 3, 32, 32, device="cuda")
    v = views.make_view(x, torch.tensor([660.0, 560, 490]), torch.full((3,), 60.0), torch.ones(6, device="cuda"), out=16,
                        band_drop=1.0, g=torch.Generator().manual_seed(0))
    assert v.image.device.type == "cuda" and v.gsd.device.type == "cuda"
