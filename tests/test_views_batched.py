"""vhrfm.ssl.views_batched: the same views as vhrfm.ssl.views, value for value, from the same random draws."""

import pytest
import torch

from vhrfm.ssl import views, views_batched


def _pair(fn_ref, fn_new, *args, seed=0):
    return fn_ref(*args, torch.Generator().manual_seed(seed)), fn_new(*args, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_d4_matches_the_per_sample_loop(seed):
    x = torch.randn(33, 3, 9, 9)
    ref, new = _pair(views.d4, views_batched.d4, x, seed=seed)
    assert torch.equal(ref, new)
    assert not torch.equal(new, x)


@pytest.mark.parametrize("bands", [1, 4])
@pytest.mark.parametrize("scale", [(0.6, 1.4), (1.0, 1.0), (0.3, 0.5), (1.5, 2.0)])
def test_resized_crop_matches_the_per_sample_loop(scale, bands):
    x = torch.randn(17, bands, 40, 44)
    gsd = torch.rand(17) + 0.3
    (ref, gref), (new, gnew) = _pair(views.resized_crop, views_batched.resized_crop, x, gsd, 24, scale)
    assert new.shape == ref.shape == (17, bands, 24, 24)
    assert torch.equal(ref, new) and torch.equal(gref, gnew)
    # the same memory layout too, not only the same values: the convolutions round by layout (one band: a
    # permuted gather passed for contiguous with channels-last strides, and training drifted in the 7th digit)
    assert new.stride() == ref.stride()


def test_spectral_jitter_and_the_generator_state_match():
    x = torch.randn(8, 5, 6, 6)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(views.spectral_jitter(x, 0.1, ga), views_batched.spectral_jitter(x, 0.1, gb))
    assert views_batched.spectral_jitter(x, 0.0, gb) is x
    # the same number of draws: the next draw agrees too, so a whole view sequence stays the same
    assert torch.equal(torch.rand(4, generator=ga), torch.rand(4, generator=gb))


def test_make_view_with_the_batched_functions_is_the_same_view(monkeypatch):
    x, wl, wd, gsd = torch.randn(12, 4, 48, 48), torch.tensor([490.0, 560, 665, 842]), torch.full((4,), 60.0), torch.ones(12)
    ref = [views.make_view(x, wl, wd, gsd, out=32, g=g) for g in [torch.Generator().manual_seed(5)] * 3]
    for name in ("d4", "resized_crop", "spectral_jitter"):
        monkeypatch.setattr(views, name, getattr(views_batched, name))
    new = [views.make_view(x, wl, wd, gsd, out=32, g=g) for g in [torch.Generator().manual_seed(5)] * 3]
    for a, b in zip(ref, new):
        assert torch.equal(a.image, b.image) and torch.equal(a.wavelengths, b.wavelengths) and torch.equal(a.gsd, b.gsd)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_views_stay_on_the_gpu():
    x = torch.randn(6, 3, 32, 32, device="cuda")
    img, gsd = views_batched.resized_crop(x, torch.ones(6), 16, (0.6, 1.4), torch.Generator().manual_seed(0))
    img = views_batched.spectral_jitter(views_batched.d4(img, torch.Generator().manual_seed(0)), 0.1, torch.Generator())
    assert img.device.type == "cuda"
