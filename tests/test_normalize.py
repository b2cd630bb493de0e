import numpy as np
import pytest

from vhrfm.data.normalize import Normalizer, band_statistics, stretch


def _tiles(arr, valid=None, n=4):
    for part, v in zip(np.array_split(arr, n, axis=1), np.array_split(valid if valid is not None else np.ones(arr.shape[1:], bool), n, axis=0)):
        yield part, v


def test_integer_statistics_are_exact():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 2048, (3, 64, 80)).astype(np.uint16)
    st = band_statistics(_tiles(arr))
    flat = arr.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(st["mean"], flat.mean(1), rtol=1e-12)
    np.testing.assert_allclose(st["std"], flat.std(1), rtol=1e-9)
    for b in range(3):
        assert st["p99"][b] == np.percentile(flat[b], 99, method="inverted_cdf")
        assert st["min"][b] == flat[b].min() and st["max"][b] == flat[b].max()
    assert st["n_pixels"] == 64 * 80 and st["n_tiles"] == 4


def test_float_statistics_and_invalid_pixels_excluded():
    rng = np.random.default_rng(2)
    arr = rng.normal(300.0, 50.0, (2, 100, 100)).astype(np.float32)
    valid = np.ones((100, 100), bool)
    valid[:50] = False
    arr[:, :50] = 1e6  # would wreck the mean if counted
    st = band_statistics(_tiles(arr, valid))
    np.testing.assert_allclose(st["mean"], arr[:, 50:].reshape(2, -1).mean(1), rtol=1e-5)
    assert abs(st["p50"][0] - np.median(arr[0, 50:])) < 5
    assert st["n_pixels"] == 5000


def test_normaliser_centres_and_scales():
    rng = np.random.default_rng(3)
    arr = rng.normal(1000, 200, (4, 50, 50)).astype(np.float32)
    st = band_statistics([(arr, np.ones((50, 50), bool))])
    z = Normalizer.from_stats(st)(arr)
    np.testing.assert_allclose(z.reshape(4, -1).mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(z.reshape(4, -1).std(1), 1, atol=1e-4)


def test_stretch_bounds():
    x = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    s = stretch(x)
    assert s.min() == 0 and s.max() == 1 and s.dtype == np.float32


def test_no_pixels_is_an_error():
    from vhrfm.errors import VHRFMInputError

    with pytest.raises(VHRFMInputError):
        band_statistics([])
