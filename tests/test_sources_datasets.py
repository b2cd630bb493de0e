"""Integration tests on the real corpus (small subsets)."""

import numpy as np
import pytest

from vhrfm.data import SOURCES, SourceDataset, collate, raster_info
from vhrfm.data.datasets import true_colour
from vhrfm.sensors import get_sensor

pytestmark = pytest.mark.integration


def test_counts_match_the_data_readme(real_data):
    n = {s: len(SOURCES[s].items()) for s in SOURCES}
    assert n["airbus_pleiades_aircraft"] == 40 and n["seals_aerial_drone"] == 1695 and n["beluga_seeker_wv3"] == 5
    boxes = {s: sum(len(i.boxes) for i in SOURCES[s].items() if i.boxes is not None) for s in SOURCES}
    assert boxes["airbus_pleiades_aircraft"] == 1154 and boxes["seals_aerial_drone"] == 12717 and boxes["beluga_seeker_wv3"] == 14
    assert n["cems_emsr382_sentinel2"] == 2


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_item_matches_its_sensor_bands(real_data, source):
    src = SOURCES[source]
    sensor = get_sensor(src.sensor)
    for it in src.items()[:50]:
        info = raster_info(real_data / it.path, expected_bands=len(it.bands))
        sensor.select(it.bands)  # every band name exists in the registry
        assert it.gsd > 0 and info.width > 0
        if it.mask:
            m = raster_info(real_data / it.mask, expected_bands=1)
            assert (m.width, m.height) == (info.width, info.height)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_samples_are_complete_dicts(smoke_splits, source):
    df, stats = smoke_splits
    ds = SourceDataset(source, df, stats=stats, tile_size=128)
    assert len(ds) > 0
    for i in (0, len(ds) - 1):
        s = ds[i]
        c = len(ds.item(i).bands)
        assert s["image"].shape == (c, 128, 128) and s["image"].dtype == np.float32
        assert s["wavelengths"].shape == (c,) and (s["wavelengths"] > 350).all()
        assert s["gsd"] > 0 and s["sensor"] == SOURCES[source].sensor
        assert np.isfinite(s["image"]).all()
        if "mask" in s:
            assert set(np.unique(s["mask"])) <= {0, 1, 255}
        if "boxes" in s:
            b = s["boxes"]
            assert b.shape[1] == 4 and len(s["labels"]) == len(b)
            assert (b[:, 0] >= 0).all() and (b[:, 2] <= s["window"][3]).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= s["window"][2]).all()


def test_normalised_training_tiles_are_centred(smoke_splits):
    df, stats = smoke_splits
    ds = SourceDataset("pleiades_pan_kahramanmaras", df, split="train", stats=stats, tile_size=128)
    vals = np.concatenate([ds[i]["image"][:, ds[i]["valid"]].ravel() for i in range(0, len(ds), 5)])
    # the statistics come from this source's training tiles: -0.06 and 1.00 measured on every fifth tile
    assert abs(vals.mean()) < 0.15 and abs(vals.std() - 1) < 0.1


def test_boxes_survive_into_tiles(smoke_splits):
    df, _ = smoke_splits
    ds = SourceDataset("seals_aerial_drone", df, split="train")
    assert sum(ds.n_boxes(i) for i in range(len(ds))) > 0
    i = max(range(len(ds)), key=ds.n_boxes)
    assert len(ds[i]["boxes"]) == ds.n_boxes(i) > 0


def test_collate_and_plot(smoke_splits):
    import matplotlib.pyplot as plt

    df, stats = smoke_splits
    ds = SourceDataset("worldview2_8band_pansharpening", df, stats=stats, products=["ms"], tile_size=128)
    batch = collate([ds[0], ds[1]])
    assert tuple(batch["image"].shape) == (2, 8, 128, 128) and tuple(batch["wavelengths"].shape) == (2, 8)
    s = ds[0]
    rgb = true_colour(s["image"], s["wavelengths"])
    assert rgb.shape == (128, 128, 3) and 0 <= rgb.min() and rgb.max() <= 1
    ax = ds.plot(s)
    assert "WorldView-2" in ax.get_title() or "worldview2" in ax.get_title()
    plt.close("all")
