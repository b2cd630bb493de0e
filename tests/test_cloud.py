"""The wildfire cloud rule: fitted on ignore masks, stored in the card, applied by whole-scene prediction."""

import numpy as np
import pandas as pd
import pytest

from vhrfm.apps.segmentation import SegTiles
from vhrfm.apps.taskmodel import TaskModel
from vhrfm.apps.wildfire import fit_cloud_rule


def _tiles(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    Y = (rng.random((4, 32, 32)) < 0.4).astype(np.uint8)
    cloud = np.zeros((4, 32, 32), bool)
    cloud[:, :8, :8] = True
    X[:, :, :8, :8] = 4.0  # bright in every band
    Y[cloud] = 255
    return SegTiles(X, Y, pd.DataFrame({"i": range(4)}), np.array([660.0, 560.0, 485.0], np.float32),
                    np.array([60.0, 60.0, 60.0], np.float32), 10.0, "test"), cloud


def test_cloud_rule_catches_bright_ignored_pixels_within_its_budget():
    tiles, cloud = _tiles()
    rule = fit_cloud_rule(tiles, max_flagged=0.01)
    assert rule["flagged_labelled"] <= 0.01 + 1e-9 and rule["caught_ignored"] == 1.0
    card = {"bands": ["r", "g", "b"], "wavelengths": [660.0, 560.0, 485.0], "widths": [60.0] * 3,
            "norm": {"mean": [0.0] * 3, "std": [1.0] * 3}, "cloud_mask": rule, "threshold": 0.5, "gsd_m": 10.0}
    flagged = TaskModel(card).cloud(tiles.X)
    assert flagged[cloud].all() and flagged[~cloud].mean() <= 0.011
    assert TaskModel({**card, "cloud_mask": None}).cloud(tiles.X) is None
    nir_only = SegTiles(tiles.X[:, :1], tiles.Y, tiles.rows, np.array([842.0], np.float32), np.array([100.0], np.float32),
                        10.0, "test")
    with pytest.raises(ValueError, match="visible"):
        fit_cloud_rule(nir_only)


def test_scene_prediction_leaves_flagged_clouds_out(tmp_path):
    import rasterio

    from vhrfm.apps.scene import predict_scene
    from vhrfm.apps.taskmodel import load_task_model, save_task_model
    from vhrfm.apps.wildfire import ClassicalIndex
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    arr = rng.integers(180, 220, (3, 150, 131)).astype(np.uint8)
    arr[:, 30:70, 40:90] = rng.integers(20, 60, (3, 40, 50))
    arr[:, 100:120, 10:30] = 255  # a saturated cloud ...
    arr[:, 100:120, 10:20] = 10   # ... half of it over a dark (burned-looking) patch
    clf = ClassicalIndex([100.0] * 3, [50.0] * 3)
    clf.name, clf.range = "darkness", (-200.0, -50.0)
    rule = {"type": "bright_visible", "min_z": 2.5}  # normalised > 2.5 in every band: raw > 225
    card = {"task": "wildfire", "name": "m", "kind": "classical", "bands": ["b04", "b03", "b02"],
            "wavelengths": [665.0, 560.0, 492.0], "widths": [30.0, 35.0, 65.0], "gsd_m": 2.0, "tile_size": 64,
            "norm": {"mean": [100.0] * 3, "std": [50.0] * 3}, "threshold": 0.5, "cloud_mask": rule}
    model = load_task_model(save_task_model(tmp_path / "m", clf, card))
    scene = tmp_path / "scene.tif"
    with rasterio.open(scene, "w", driver="GTiff", width=131, height=150, count=3, dtype="uint8", crs="EPSG:32628",
                       transform=from_origin(400000, 3100000, 2.0, 2.0)) as dst:
        dst.write(arr)
    on = predict_scene(scene, model, tmp_path / "on", tile=64, overlap=16, progress=False, write_map=False)
    off = predict_scene(scene, model, tmp_path / "off", tile=64, overlap=16, progress=False, write_map=False,
                        cloud_mask=False)
    with rasterio.open(tmp_path / "on" / "scene_mask.tif") as m_on, rasterio.open(tmp_path / "off" / "scene_mask.tif") as m_off:
        a, b = m_on.read(1), m_off.read(1)
    assert (a[100:120, 20:30] == 255).all() and (b[100:120, 20:30] == 0).all()  # the bright cloud: unknown, not unburned
    assert (a[100:120, 10:20] == 1).all()  # dark under the rule's threshold: still burned
    assert on["cloud_pixels"] == 200 and on["cloud_km2"] == pytest.approx(200 * 4 / 1e6)
    assert off["cloud_pixels"] == 0 and any("cloud" in n for n in on["notes"])
    assert on["positive_pixels"] == off["positive_pixels"]  # the cloud was not called burned by this model anyway
