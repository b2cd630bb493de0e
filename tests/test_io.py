import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import Point

from vhrfm.data.io import (RasterWriter, Stitcher, iter_tiles, open_raster, raster_info, read_window, tile_grid,
                           write_geojson, write_geotiff)


@pytest.mark.parametrize("h,w,tile,overlap", [(300, 257, 128, 16), (1000, 997, 256, 32), (50, 70, 128, 0),
                                               (257, 256, 256, 1), (129, 513, 64, 63)])
def test_cores_partition_scene_and_windows_stay_inside(h, w, tile, overlap):
    cover = np.zeros((h, w), int)
    for t in tile_grid(h, w, tile, overlap):
        win, core = t.window, t.core
        assert 0 <= win.row_off and win.row_off + win.height <= h and 0 <= win.col_off and win.col_off + win.width <= w
        assert win.height == min(tile, h) and win.width == min(tile, w)
        # the core lies inside its window
        assert win.row_off <= core.row_off and core.row_off + core.height <= win.row_off + win.height
        cover[core.row_off:core.row_off + core.height, core.col_off:core.col_off + core.width] += 1
    assert (cover == 1).all()


def test_stride_is_tile_minus_overlap():
    tiles = tile_grid(1000, 1000, 256, 56)
    cols = sorted({t.window.col_off for t in tiles})
    assert cols[:4] == [0, 200, 400, 600] and cols[-1] == 1000 - 256


@pytest.mark.parametrize("dtype", ["uint16", "float32", "uint8"])
@pytest.mark.parametrize("overlap", [0, 24])
def test_tile_then_stitch_to_file_reproduces_input_exactly(make_raster, tmp_path, dtype, overlap):
    path, arr = make_raster(dtype=dtype, height=301, width=259)
    info = raster_info(path)
    out = tmp_path / "stitched.tif"
    with rasterio.open(path) as src:
        crs, transform = src.crs, src.transform
    with RasterWriter(out, width=info.width, height=info.height, count=info.count, dtype=dtype, crs=crs,
                      transform=transform) as wr:
        st = Stitcher(info.height, info.width, info.count, sink=wr)
        for t, data, _ in iter_tiles(path, 128, overlap, skip_empty=False):
            st.add(t, data)
        assert st.complete
    with rasterio.open(out) as dst:
        assert dst.crs == crs and dst.transform == transform and dst.dtypes[0] == dtype
        np.testing.assert_array_equal(dst.read(), arr)


def test_stitch_in_memory_with_padded_tiles(make_raster):
    path, arr = make_raster(height=200, width=150, count=2)
    st = Stitcher(200, 150, 2, dtype="uint16")
    for t, data, valid in iter_tiles(path, 128, 16, pad=True, skip_empty=False):
        assert data.shape == (2, 128, 128)
        st.add(t, data[:, : t.window.height, : t.window.width])
    np.testing.assert_array_equal(st.array, arr)


def test_iter_tiles_never_reads_the_whole_scene(make_raster, monkeypatch):
    path, _ = make_raster(height=600, width=600, count=1)
    calls = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("window"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    n = sum(1 for _ in iter_tiles(path, 128, 16))
    assert n == len(calls) > 1
    assert all(w is not None and w.height <= 128 and w.width <= 128 for w in calls)


def test_read_window_pads_and_marks_nodata(make_raster):
    path, arr = make_raster(count=2, height=100, width=100, nodata=0)
    with rasterio.open(path, "r+") as ds:
        block = ds.read()
        block[:, :10, :10] = 0
        ds.write(block)
    with open_raster(path) as src:
        data, valid = read_window(src, Window(90, 0, 10, 20), out_size=32)
    assert data.shape == (2, 32, 32) and valid.shape == (32, 32)
    assert not valid[:, 10:].any() and not valid[20:].any()   # padding
    assert valid[:20, :10].all()
    with open_raster(path) as src:
        _, valid = read_window(src, Window(0, 0, 20, 20))
    assert not valid[:10, :10].any() and valid[10:, 10:].all()  # nodata


def test_geotiff_writer_makes_a_cog_and_keeps_georeference(make_raster, tmp_path):
    path, arr = make_raster(height=512, width=640, count=1)
    with rasterio.open(path) as src:
        crs, transform = src.crs, src.transform
    out = write_geotiff(tmp_path / "o.tif", arr, crs=crs, transform=transform, nodata=0)
    with rasterio.open(out) as dst:
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.crs == crs and dst.transform == transform and dst.nodata == 0
        np.testing.assert_array_equal(dst.read(), arr)


def test_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "sub" / "never.tif"
    with pytest.raises(RuntimeError):
        with RasterWriter(out, width=300, height=300, count=1, dtype="uint8") as wr:
            wr.write(np.ones((1, 100, 100), np.uint8), Window(0, 0, 100, 100))
            raise RuntimeError("model crashed mid-scene")
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_geojson_roundtrip(tmp_path):
    gdf = gpd.GeoDataFrame({"score": [0.9, 0.4]}, geometry=[Point(600010, 5699990), Point(600020, 5699980)],
                           crs="EPSG:32631")
    out = write_geojson(tmp_path / "pts.geojson", gdf)
    back = gpd.read_file(out)
    assert back.crs.to_epsg() == 32631 and list(back.score) == [0.9, 0.4]
    assert json.loads(out.read_text())["type"] == "FeatureCollection"


@pytest.mark.parametrize("driver,name", [("PNG", "x.png"), ("JPEG", "x.jpg")])
def test_reads_png_and_jpeg(make_raster, driver, name):
    path, arr = make_raster(name=name, driver=driver, count=3, dtype="uint8", crs=None, height=90, width=70)
    info = raster_info(path)
    assert (info.count, info.height, info.width, info.dtype, info.crs) == (3, 90, 70, "uint8", None)
    tiles = list(iter_tiles(path, 64, 8))
    assert len(tiles) == 4
    if driver == "PNG":  # lossless
        t, data, _ = tiles[0]
        np.testing.assert_array_equal(data, arr[:, :64, :64])
