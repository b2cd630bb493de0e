"""Whole-scene prediction on synthetic rasters: stitching, georeference, areas, polygons, errors, no partial outputs."""

import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from typer.testing import CliRunner

from vhrfm.apps.scene import pixel_size_m, predict_array, predict_scene
from vhrfm.apps.taskmodel import load_task_model, resolve_task_model, save_task_model
from vhrfm.apps.wildfire import ClassicalIndex
from vhrfm.cli import app
from vhrfm.errors import VHRFMInputError
from vhrfm.heads import Segmenter
from vhrfm.models import create_encoder

RGB_WL, RGB_WD = [665.0, 560.0, 492.0], [30.0, 35.0, 65.0]


def _card(**kw):
    return {"task": "wildfire", "name": "test_model", "bands": ["b04", "b03", "b02"], "wavelengths": RGB_WL,
            "widths": RGB_WD, "gsd_m": 2.0, "tile_size": 64, "norm": {"mean": [100.0] * 3, "std": [50.0] * 3},
            "threshold": 0.5, **kw}


def _darkness_rule():
    clf = ClassicalIndex([100.0] * 3, [50.0] * 3)
    clf.name, clf.range = "darkness", (-200.0, -50.0)  # brightness 50 -> 1.0, 200 -> 0.0, 125 -> 0.5
    return clf


@pytest.fixture
def classical(tmp_path):
    path = save_task_model(tmp_path / "models" / "classical", _darkness_rule(), _card(kind="classical"))
    return load_task_model(path, task="wildfire")


def _scene(path, arr, crs="EPSG:32628", res=2.0, origin=(400000, 3100000)):
    kw = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype=arr.dtype)
    if crs is not None:
        kw.update(crs=crs, transform=from_origin(*origin, res, res))
    with rasterio.open(path, "w", **kw) as dst:
        dst.write(arr)
    return path


def _bright_scene_with_dark_square(h=150, w=131, box=(30, 70, 40, 90)):
    rng = np.random.default_rng(0)
    arr = rng.integers(180, 230, (3, h, w)).astype(np.uint8)
    r0, r1, c0, c1 = box
    arr[:, r0:r1, c0:c1] = rng.integers(20, 60, (3, r1 - r0, c1 - c0))
    return arr


def test_task_model_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = Segmenter(create_encoder("resnet18_anyband"), width=16)
    card = _card(kind="segmenter", encoder={"arch": "resnet18_anyband", "arch_kwargs": {}}, head_width=16)
    path = save_task_model(tmp_path / "seg", net, card)
    m = load_task_model(path)
    x = np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64)).astype(np.float32)
    direct = torch.sigmoid(net.eval()(torch.from_numpy((x - 100) / 50), torch.tensor(RGB_WL), torch.full((2,), 2.0),
                                      torch.tensor(RGB_WD))[:, 0]).detach().numpy()
    np.testing.assert_allclose(m.probs(x), direct, atol=1e-6)
    with pytest.raises(VHRFMInputError, match="band count"):
        m.probs(x[:, :2])
    with pytest.raises(VHRFMInputError, match="another task"):
        load_task_model(path, task="megafauna")
    (tmp_path / "seg.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VHRFMInputError, match="corrupt"):
        load_task_model(path)


def test_scene_outputs_match_pixelwise_model(tmp_path, classical):
    arr = _bright_scene_with_dark_square()
    scene = _scene(tmp_path / "scene.tif", arr)
    s = predict_scene(scene, classical, tmp_path / "out", tile=64, overlap=16, batch_size=3, progress=False)
    out = tmp_path / "out"
    with rasterio.open(scene) as src, rasterio.open(out / "scene_prob.tif") as p, rasterio.open(out / "scene_mask.tif") as m:
        assert p.crs == src.crs and p.transform == src.transform and (p.height, p.width) == (src.height, src.width)
        assert m.crs == src.crs and m.dtypes[0] == "uint8" and m.nodata == 255
        prob, mask = p.read(1), m.read(1)
        assert p.tags()["threshold"] == "0.5"
    # a pixel-wise model on the whole array = the stitched windows, bit for bit
    np.testing.assert_array_equal(prob, classical.probs(arr[None].astype(np.float32))[0])
    np.testing.assert_array_equal(mask, (prob >= 0.5).astype(np.uint8))
    assert mask[30:70, 40:90].all() and mask.sum() == 40 * 50
    assert s["positive_pixels"] == 2000 and s["area_km2"] == pytest.approx(2000 * 4 / 1e6)
    gdf = gpd.read_file(out / "scene_polygons.geojson")
    assert len(gdf) == 1 and gdf.crs.to_epsg() == 4326 and s["polygons"] == 1
    assert gdf.area_m2.iloc[0] == pytest.approx(8000, rel=0.01)
    summary = json.loads((out / "scene_summary.json").read_text())
    assert summary["gsd_m"] == 2.0 and summary["tiles"] == s["tiles"] > 1 and "GSD" not in " ".join(summary["notes"])
    # the stages of a small scene take milliseconds or less: the summary keeps 4 significant digits of each, not
    # whole milliseconds (a classical index under 0.5 ms read 0 in a benchmark)
    assert summary["timing_s"] and all(0 <= v <= 1.001 * summary["runtime_s"] for v in summary["timing_s"].values())
    assert any(v != round(v, 3) for v in summary["timing_s"].values())
    assert (out / "scene_map.html").read_text().count("leaflet") > 0 and (out / "scene_preview.png").stat().st_size > 0
    assert not list(out.glob(".vhrfm-partial-*"))


def test_polygons_merge_across_strips_and_geographic_area(tmp_path, classical):
    # a tall dark band crossing several polygon strips, in a geographic CRS (area on the sphere)
    arr = _bright_scene_with_dark_square(h=300, w=80, box=(10, 290, 20, 50))
    res = 1e-4
    scene = _scene(tmp_path / "geo.tif", arr, crs="EPSG:4326", res=res, origin=(-15.6, 28.0))
    s = predict_scene(scene, classical, tmp_path / "geo", tile=64, overlap=8, write_map=False, progress=False)
    with rasterio.open(scene) as src:
        assert pixel_size_m(src) == pytest.approx(res * np.pi / 180 * 6371008.8 * (1 + np.cos(np.radians(27.985))) / 2, rel=1e-3)
    gdf = gpd.read_file(tmp_path / "geo" / "geo_polygons.geojson")
    assert len(gdf) == 1  # one polygon although it was traced in several strips
    assert s["area_km2"] == pytest.approx(gdf.area_m2.sum() / 1e6, rel=0.01)
    assert not (tmp_path / "geo" / "geo_map.html").exists()


def test_bad_inputs_leave_nothing(tmp_path, classical, make_raster):
    four, _ = make_raster("four.tif", count=4, dtype="uint8")
    nocrs, _ = make_raster("nocrs.tif", count=3, dtype="uint8", crs=None)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 this is not a tiff")
    for path, msg in ((four, "band count"), (nocrs, "no CRS"), (corrupt, "cannot be read"), (tmp_path / "nope.tif", "not found")):
        with pytest.raises(VHRFMInputError, match=msg):
            predict_scene(path, classical, tmp_path / "never", progress=False)
        assert not (tmp_path / "never").exists()


def test_failure_midway_keeps_previous_outputs(tmp_path, classical):
    scene = _scene(tmp_path / "scene.tif", _bright_scene_with_dark_square())
    out = tmp_path / "out"
    out.mkdir()
    (out / "scene_mask.tif").write_text("an earlier result")
    with pytest.raises(RuntimeError, match="on purpose"):
        predict_scene(scene, classical, out, tile=64, overlap=16, batch_size=2, fail_after_tiles=3, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["scene_mask.tif"]
    assert (out / "scene_mask.tif").read_text() == "an earlier result"


def test_gsd_far_from_training_is_flagged(tmp_path, classical):
    scene = _scene(tmp_path / "vhr.tif", _bright_scene_with_dark_square(), res=0.3)
    s = predict_scene(scene, classical, tmp_path / "o", tile=64, write_map=False, progress=False)
    assert any("out of the training distribution" in n for n in s["notes"])


def test_cli_predict(tmp_path, classical):
    runner = CliRunner()
    r = runner.invoke(app, ["predict", "--help"])
    assert r.exit_code == 0 and "--task" in r.output and "--out" in r.output
    scene = _scene(tmp_path / "scene.tif", _bright_scene_with_dark_square())
    card = tmp_path / "models" / "classical.json"
    r = runner.invoke(app, ["predict", str(scene), "-o", str(tmp_path / "cli"), "--model", str(card), "--tile", "64",
                            "--no-map", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["area_km2"] == pytest.approx(0.008)
    r = runner.invoke(app, ["predict", str(scene), "-o", str(tmp_path / "cli2"), "--task", "nonsense"])
    assert r.exit_code != 0 and isinstance(r.exception, VHRFMInputError)


def test_predict_array_equals_scene_prediction(tmp_path, classical):
    arr = _bright_scene_with_dark_square()
    scene = _scene(tmp_path / "scene.tif", arr)
    predict_scene(scene, classical, tmp_path / "o", tile=64, overlap=16, write_map=False, progress=False)
    with rasterio.open(tmp_path / "o" / "scene_prob.tif") as src:
        np.testing.assert_array_equal(predict_array(classical, arr, 2.0, tile=64, overlap=16), src.read(1))
    with pytest.raises(VHRFMInputError, match="band count"):
        predict_array(classical, arr[:1], 2.0)


# ----------------------------------------------------------------------------------------------- points (megafauna)


def _blob_model(tmp_path, polarity="bright"):
    from vhrfm.apps.megafauna import BlobDetector

    det = BlobDetector(size_m=1.5, radius_m=1.5)
    det.polarity, det.scale = polarity, 0.5
    card = _card(kind="classical", task="megafauna", output="points", positive_class="animal", gsd_m=0.3, tile_size=64,
                 threshold=0.3, decoder={"min_score": 0.05, "radius_m": 1.5})
    return load_task_model(save_task_model(tmp_path / "models" / "blob", det, card), task="megafauna")


def _animals(h=150, w=131, centres=((20, 20), (75, 60), (120, 100), (60, 63)), seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.normal(100, 2, (3, h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    for r, c in centres:
        arr += 120 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.8 ** 2))
    return np.clip(arr, 0, 255).astype(np.uint8), np.array(centres, float)


def test_nms_points_keeps_the_best_of_neighbours():
    from vhrfm.apps.scene import nms_points

    pts = np.array([[10, 10, 0.5], [11, 10, 0.9], [40, 40, 0.3]], np.float32)
    kept = nms_points(pts, 3.0)
    assert kept[:, 2].tolist() == pytest.approx([0.9, 0.3])


def test_points_scene_finds_each_animal_once(tmp_path):
    from vhrfm.apps.scene import predict_points_scene

    model = _blob_model(tmp_path)
    arr, centres = _animals()
    scene = _scene(tmp_path / "animals.tif", arr, res=0.3)
    # tile 64, overlap 16: the animal at column 60-63 sits where windows overlap
    s = predict_points_scene(scene, model, tmp_path / "o", tile=64, overlap=16, progress=False)
    assert s["count"] == len(centres)
    gdf = gpd.read_file(tmp_path / "o" / "animals_points.geojson")
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == len(centres)
    found = np.sort(gdf[["row", "col"]].to_numpy(), axis=0)
    np.testing.assert_allclose(found, np.sort(centres, axis=0), atol=1)
    utm = gdf.to_crs("EPSG:32628")
    x0, y0 = 400000 + (centres[0][1] + 0.5) * 0.3, 3100000 - (centres[0][0] + 0.5) * 0.3
    assert np.hypot(utm.geometry.x - x0, utm.geometry.y - y0).min() < 0.31
    assert (tmp_path / "o" / "animals_map.html").exists() and s["gsd_m"] == pytest.approx(0.3)


def test_points_scene_without_crs_needs_gsd_and_uses_pixels(tmp_path):
    from vhrfm.apps.scene import predict_points_scene

    model = _blob_model(tmp_path)
    arr, centres = _animals()
    scene = _scene(tmp_path / "photo.tif", arr, crs=None)
    with pytest.raises(VHRFMInputError, match="GSD is unknown"):
        predict_points_scene(scene, model, tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()
    s = predict_points_scene(scene, model, tmp_path / "px", gsd=0.3, tile=64, progress=False)
    assert s["count"] == len(centres) and any("pixel coordinates" in n for n in s["notes"])
    assert s["outputs"]["points"] == "photo_points_pixels.geojson" and not (tmp_path / "px" / "photo_points.geojson").exists()
    gdf = gpd.read_file(tmp_path / "px" / "photo_points_pixels.geojson")
    assert (gdf.geometry.x - gdf.col).abs().max() == pytest.approx(0.5) and (gdf.geometry.y - gdf.row).abs().max() == pytest.approx(0.5)
    assert not (tmp_path / "px" / "photo_map.html").exists()


def test_other_sensor_bands_only_for_band_agnostic_models(tmp_path):
    from vhrfm.apps.scene import adapt_to_scene, predict_points_scene

    arr, centres = _animals()
    pan = _scene(tmp_path / "pan.tif", arr[:1].astype(np.uint16) * 8, res=0.3)
    model = _blob_model(tmp_path)
    with pytest.raises(VHRFMInputError, match="band count"):
        predict_points_scene(pan, model, tmp_path / "x", progress=False)
    adapted = adapt_to_scene(model, pan, sensor="worldview3")
    assert adapted.card["bands"] == ["pan"] and adapted.card["trained_bands"] == ["b04", "b03", "b02"]
    s = predict_points_scene(pan, adapted, tmp_path / "pan_out", tile=64, progress=False)
    assert s["count"] == len(centres) and any("training bands" in n for n in s["notes"])
    unet = load_task_model(save_task_model(tmp_path / "u", __import__("vhrfm.heads", fromlist=["SMPUNet"]).SMPUNet(3),
                                           _card(kind="unet")))
    with pytest.raises(VHRFMInputError, match="only its training bands"):
        adapt_to_scene(unet, pan, sensor="worldview3")


def test_cli_predict_megafauna_points(tmp_path):
    runner = CliRunner()
    _blob_model(tmp_path)
    arr, centres = _animals()
    pan = _scene(tmp_path / "pan.tif", arr[:1].astype(np.uint16) * 8, res=0.3)
    card = str(tmp_path / "models" / "blob.json")
    r = runner.invoke(app, ["predict", str(pan), "-o", str(tmp_path / "o"), "--task", "megafauna", "--model", card,
                            "--sensor", "worldview3", "--tile", "64", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["count"] == len(centres)
    r = runner.invoke(app, ["predict", str(pan), "-o", str(tmp_path / "o2"), "--task", "wildfire", "--model", card])
    assert isinstance(r.exception, VHRFMInputError) and "another task" in str(r.exception)


def test_scene_prediction_reads_and_holds_windows_not_the_scene(tmp_path, classical, monkeypatch):
    """Why memory does not grow with the scene: every read of the scene is one window (at most a tile), the
    outputs are stitched straight into their files, the polygons are traced from row strips and the map from a
    decimated quick look. The scene is taller than one polygon strip (1,024 rows) so that each bound is exercised."""
    import vhrfm.apps.scene as scene_mod
    from vhrfm.data.io import Stitcher

    rng = np.random.default_rng(0)
    arr = rng.integers(20, 230, (3, 1300, 160)).astype(np.uint8)
    scene = _scene(tmp_path / "tall.tif", arr)
    reads, sinks = [], []
    original_read, original_init = rasterio.io.DatasetReader.read, Stitcher.__init__

    def read_spy(self, *args, **kwargs):
        reads.append((os.path.basename(self.name), kwargs.get("window"), kwargs.get("out_shape")))
        return original_read(self, *args, **kwargs)

    def init_spy(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        sinks.append(self.sink)

    def vrt_spy(self, *args, **kwargs):  # the quick look reads through a warped VRT (to EPSG:4326)
        reads.append(("vrt:" + os.path.basename(self.src_dataset.name), kwargs.get("window"), kwargs.get("out_shape")))
        return original_vrt_read(self, *args, **kwargs)

    from rasterio.vrt import WarpedVRT

    original_vrt_read = WarpedVRT.read
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read_spy)
    monkeypatch.setattr(WarpedVRT, "read", vrt_spy)
    monkeypatch.setattr(scene_mod, "Stitcher", type("SpyStitcher", (Stitcher,), {"__init__": init_spy}))
    s = predict_scene(scene, classical, tmp_path / "out", tile=64, overlap=16, batch_size=4, progress=False)
    assert s["tiles"] > 20 and (tmp_path / "out" / "tall_map.html").exists()
    assert sinks and all(sink is not None for sink in sinks)  # no in-memory mosaic
    assert reads
    for name, window, out_shape in reads:
        assert window is not None or out_shape is not None, f"a whole-raster read of {name}"
        if window is not None and name == "tall.tif":
            assert window.height <= 64 and window.width <= 64
        if window is not None:
            assert window.height <= 1024
        if out_shape is not None and window is None:
            assert max(out_shape[-2:]) <= 1024
    assert any(name == "vrt:tall.tif" and out_shape is not None for name, _, out_shape in reads)  # the quick look


# `vhrfm predict` as an analyst calls it: which model the default and the index names resolve to, and bad input
# that stops with one clear line, exit code 2 and no output folder.


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A project root with two wildfire models of the smoke profile and an index naming one the default."""
    folder = tmp_path / "models" / "smoke" / "wildfire"
    for name, thr in (("dark_rule", 0.5), ("strict_rule", 0.9)):
        save_task_model(folder / name, _darkness_rule(), _card(kind="classical", name=name, threshold=thr))
    (folder / "index.json").write_text(json.dumps({"default": "dark_rule", "teacher": "strict_rule"}))
    monkeypatch.setenv("VHRFM_ROOT", str(tmp_path))
    _scene(tmp_path / "scene.tif", np.random.default_rng(0).integers(20, 230, (3, 96, 80)).astype(np.uint8))
    return tmp_path


def _predict(root, *args):
    return CliRunner().invoke(app, ["predict", str(root / "scene.tif"), "--profile", "smoke", "--quiet", "--no-map",
                                    *args])


def test_default_and_index_names_resolve_through_the_index(root):
    folder = root / "models" / "smoke" / "wildfire"
    assert resolve_task_model("wildfire", None, "smoke") == folder / "dark_rule.json"
    assert resolve_task_model("wildfire", "teacher", "smoke") == folder / "strict_rule.json"
    assert resolve_task_model("wildfire", "strict_rule", "smoke") == folder / "strict_rule.json"
    assert resolve_task_model("wildfire", str(folder / "dark_rule.json"), "smoke") == folder / "dark_rule.json"
    # without --model the index's default runs, with its own threshold chosen on validation
    r = _predict(root, "-o", str(root / "out_default"))
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.splitlines()[0])
    assert summary["model"] == "dark_rule" and summary["threshold"] == 0.5
    r = _predict(root, "-o", str(root / "out_teacher"), "--model", "teacher")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["model"] == "strict_rule"
    # --threshold overrides the card's
    r = _predict(root, "-o", str(root / "out_thr"), "--threshold", "0.7")
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[0])["threshold"] == 0.7


def test_model_lookup_errors_name_what_exists(root):
    with pytest.raises(VHRFMInputError, match="saved no 'student' model") as e:
        resolve_task_model("wildfire", "student", "smoke")
    assert "default" in str(e.value) and "teacher" in str(e.value)
    with pytest.raises(VHRFMInputError, match="task model not found"):
        resolve_task_model("wildfire", "no_such_model", "smoke")
    with pytest.raises(VHRFMInputError, match="no trained megafauna model yet"):
        resolve_task_model("megafauna", None, "smoke")
    with pytest.raises(VHRFMInputError, match="unknown task"):
        resolve_task_model("floods", None, "smoke")


@pytest.mark.parametrize("args, message", [
    (["--threshold", "1.5"], "threshold must be a probability"),
    (["--bands", "b04,b03,b02"], "--bands needs --sensor"),
    (["--sensor", "pleiades"], "cannot tell which pleiades bands"),
    (["--sensor", "no_such_sensor"], "unknown sensor"),
    (["--task", "floods"], "unknown task"),
])
def test_bad_predict_input_stops_before_any_output(root, args, message):
    out = root / "out"
    r = _predict(root, "-o", str(out), *args)
    assert r.exit_code != 0 and isinstance(r.exception, VHRFMInputError)
    assert message in str(r.exception)
    assert not out.exists()


def test_output_path_that_is_a_file_is_refused_and_kept(root):
    out = root / "taken.txt"
    out.write_text("keep me")
    r = _predict(root, "-o", str(out))
    assert isinstance(r.exception, VHRFMInputError) and "not a folder" in str(r.exception)
    assert out.read_text() == "keep me"


def test_predict_error_through_the_entry_point_is_one_line_and_exit_2(root):
    """What a shell user sees: `error: ...` on stderr, exit code 2, no traceback, no output folder."""
    out = root / "out"
    r = subprocess.run([sys.executable, "-m", "vhrfm.cli", "predict", str(root / "scene.tif"), "-o", str(out),
                        "--profile", "smoke", "--threshold", "-0.1", "--quiet"],
                       capture_output=True, text=True, env={**os.environ, "VHRFM_ROOT": str(root)})
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: threshold must be a probability")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert not out.exists()
