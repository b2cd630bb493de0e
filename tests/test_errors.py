"""Bad input: one clear error type naming what was expected and found, and nothing partial written."""

import subprocess
import sys

import numpy as np
import pytest
from rasterio.windows import Window

from vhrfm.data.io import open_raster, raster_info, read_window, require_crs
from vhrfm.data.normalize import Normalizer
from vhrfm.errors import VHRFMInputError
from vhrfm.sensors import get_sensor


def test_missing_file(tmp_path):
    with pytest.raises(VHRFMInputError, match="not found"):
        raster_info(tmp_path / "nope.tif")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.tif"
    p.write_bytes(b"")
    with pytest.raises(VHRFMInputError, match="empty"):
        raster_info(p)


def test_corrupt_file(tmp_path, make_raster):
    good, _ = make_raster()
    p = tmp_path / "corrupt.tif"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VHRFMInputError, match="cannot be read") as exc:
        raster_info(p)
    assert exc.value.path == p and exc.value.found
    # a truncated GeoTIFF (header kept, data cut) is also rejected, not read as garbage
    t = tmp_path / "truncated.tif"
    raw = good.read_bytes()
    t.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VHRFMInputError, match="corrupt"):
        with open_raster(t) as src:
            read_window(src, Window(0, 0, src.width, src.height))


def test_unknown_sensor_lists_known_ones():
    with pytest.raises(VHRFMInputError) as exc:
        get_sensor("sentinel-7")
    assert "worldview2" in str(exc.value) and "sentinel-7" in str(exc.value)


def test_band_count_mismatch(make_raster):
    path, _ = make_raster(count=4)
    with pytest.raises(VHRFMInputError, match="band count") as exc:
        raster_info(path, expected_bands=8)
    assert exc.value.expected == 8 and exc.value.found == 4
    with pytest.raises(VHRFMInputError, match="band count"):
        get_sensor("worldview2").check_band_count(4, get_sensor("worldview2").band_names("ms"))


def test_missing_crs(make_raster):
    path, _ = make_raster(crs=None)
    with pytest.raises(VHRFMInputError, match="no CRS"):
        raster_info(path, require_crs=True)
    with pytest.raises(VHRFMInputError, match="georeferenced"):
        require_crs(raster_info(path), "writing GeoJSON in map coordinates")


def test_all_nodata_window(make_raster):
    path, _ = make_raster(count=1, nodata=0, fill=0)
    with open_raster(path) as src:
        with pytest.raises(VHRFMInputError, match="only nodata") as exc:
            read_window(src, Window(0, 0, 64, 64), allow_empty=False)
    assert "64" in str(exc.value.found)


def test_normaliser_band_mismatch():
    norm = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32), ("b", "g", "r", "n"))
    with pytest.raises(VHRFMInputError, match="band count"):
        norm(np.zeros((3, 8, 8), np.float32))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vhrfm.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_reports_bad_input_in_one_line_and_exit_2(tmp_path, make_raster):
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    r = _cli("info", str(bad))
    assert r.returncode == 2 and r.stderr.strip().startswith("error: raster file cannot be read")
    assert "Traceback" not in r.stderr
    path, _ = make_raster(count=8)
    r = _cli("info", str(path), "--sensor", "pleiades")
    assert r.returncode == 2 and "expected: one of [1, 4, 5]" in r.stderr and "found: 8" in r.stderr
    r = _cli("sensors", "no-such-sensor")
    assert r.returncode == 2 and "unknown sensor" in r.stderr
