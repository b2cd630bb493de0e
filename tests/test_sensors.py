"""Tests for the sensor registry (vhrfm.sensors)."""

from __future__ import annotations

import numpy as np
import pytest

from vhrfm.errors import VHRFMInputError
from vhrfm.sensors import (
    SENSORS,
    Band,
    Sensor,
    get_sensor,
    list_sensors,
    register_sensor,
    true_colour_indices,
)

EXPECTED_IDS = {
    "pleiades",
    "pleiades_neo",
    "spot6_7",
    "worldview2",
    "worldview3",
    "geoeye1",
    "quickbird",
    "rapideye",
    "aerial_rgb",
    "aerial_rgbn",
    "sentinel2",
}
# Sensors whose documented PAN and MS GSD are both sub-2.5 m (SPOT-6/7 MS is 6 m, RapidEye 5 m).
VHR_IDS = ["pleiades", "pleiades_neo", "worldview2", "worldview3", "geoeye1", "quickbird"]


def _toy_sensor(sensor_id: str = "toy_cam", aliases: tuple[str, ...] = ("toycam-x",)) -> Sensor:
    return Sensor(
        id=sensor_id,
        name="Toy camera",
        bands=(Band("green", 550.0, 40.0, "ms"), Band("red", 660.0, 40.0, "ms")),
        gsd_m={"ms": 1.0},
        bit_depth=8,
        kind="aerial",
        reference="test fixture",
        aliases=aliases,
    )


def test_registry_contains_expected_sensors():
    assert EXPECTED_IDS <= set(list_sensors())
    assert list_sensors() == sorted(list_sensors())
    for sid, sensor in SENSORS.items():
        assert sensor.id == sid
    assert len({get_sensor("wv2"), get_sensor("worldview2")}) == 1  # hashable despite dict field


@pytest.mark.parametrize("sid", sorted(EXPECTED_IDS))
def test_bands_physical_and_groups_have_gsd(sid):
    s = get_sensor(sid)
    assert s.bands
    assert s.reference.strip()
    assert s.kind in ("satellite", "aerial")
    names = s.band_names()
    assert len(names) == len(set(names))
    for b in s.bands:
        assert b.width_nm > 0
        assert 350.0 <= b.lower_nm < b.center_nm < b.upper_nm <= 2500.0
        assert b.upper_nm - b.lower_nm == pytest.approx(b.width_nm)
        assert b.group in s.gsd_m
        assert s.gsd(b.group) > 0
        assert b.name == b.name.lower()
    assert len(s.wavelengths()) == len(s.widths()) == len(s.bands)


@pytest.mark.parametrize("sid", VHR_IDS)
def test_vhr_gsd_below_2_5_m(sid):
    s = get_sensor(sid)
    assert s.gsd("pan") < 1.0
    assert s.gsd("ms") < 2.5
    assert s.gsd("pan") < s.gsd("ms")


def test_all_pan_gsd_below_2_5_m():
    for s in SENSORS.values():
        if "pan" in s.gsd_m:
            assert s.gsd("pan") < 2.5, s.id


def test_bit_depths():
    expected = {
        "pleiades": 12, "pleiades_neo": 12, "spot6_7": 12, "worldview2": 11, "worldview3": 11,
        "geoeye1": 11, "quickbird": 11, "rapideye": 12, "aerial_rgb": 8, "aerial_rgbn": 8, "sentinel2": 12,
    }
    for sid, depth in expected.items():
        assert get_sensor(sid).bit_depth == depth, sid


def test_worldview2_known_values():
    wv2 = get_sensor("worldview2")
    assert wv2.band_names("ms") == ["coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2"]
    assert wv2.band_names("pan") == ["pan"]
    assert wv2.band_names("swir") == []
    coastal = wv2.band("coastal")
    assert coastal.center_nm == pytest.approx(425.0)
    assert (coastal.lower_nm, coastal.upper_nm) == pytest.approx((400.0, 450.0))
    assert wv2.band("nir2").upper_nm == pytest.approx(1040.0)
    assert wv2.gsd("pan") == pytest.approx(0.46)
    assert wv2.gsd("ms") == pytest.approx(1.84)


def test_worldview3_swir():
    wv3 = get_sensor("wv3")
    swir = wv3.band_names("swir")
    assert swir == [f"swir{i}" for i in range(1, 9)]
    assert len(wv3.band_names("ms")) == 8
    assert len(wv3.bands) == 17
    assert wv3.gsd("swir") > wv3.gsd("ms") > wv3.gsd("pan")
    assert (wv3.band("swir1").lower_nm, wv3.band("swir1").upper_nm) == pytest.approx((1195.0, 1225.0))
    assert wv3.band("swir8").upper_nm == pytest.approx(2365.0)


def test_pleiades_known_values():
    phr = get_sensor("pleiades")
    blue = phr.band("blue")
    assert (blue.lower_nm, blue.upper_nm) == pytest.approx((430.0, 550.0))
    assert blue.center_nm == pytest.approx(490.0)
    assert phr.band_names("ms") == ["blue", "green", "red", "nir"]
    assert (phr.band("pan").lower_nm, phr.band("pan").upper_nm) == pytest.approx((470.0, 830.0))
    assert phr.gsd("pan") == 0.5 and phr.gsd("ms") == 2.0


def test_other_spot_checks():
    assert get_sensor("pleiades_neo").band_names("ms") == [
        "deep_blue", "blue", "green", "red", "red_edge", "nir"
    ]
    assert get_sensor("geoeye1").band("red").lower_nm == pytest.approx(655.0)
    assert get_sensor("quickbird").band("pan").upper_nm == pytest.approx(1053.0)
    assert get_sensor("spot6_7").band("red").center_nm == pytest.approx(660.0)
    re_ = get_sensor("rapideye")
    assert "pan" not in re_.gsd_m and re_.band_names("pan") == []
    assert re_.band("red_edge").center_nm == pytest.approx(710.0)
    s2 = get_sensor("sentinel2")
    assert len(s2.bands) == 13
    assert s2.band("B8A").center_nm == pytest.approx(864.7)
    assert s2.band("b02").width_nm == pytest.approx(66.0)
    assert s2.band_names()[8] == "b8a"
    assert get_sensor("aerial_rgbn").band_names() == ["blue", "green", "red", "nir"]


def test_band_lookup_and_selection():
    wv2 = get_sensor("worldview2")
    assert wv2.band("Red Edge") is wv2.band("red_edge")
    assert [b.name for b in wv2.select(["red", "green", "blue"])] == ["red", "green", "blue"]
    assert wv2.select("nir1") == [wv2.band("nir1")]
    assert wv2.wavelengths(["red", "blue"]) == [660.0, 480.0]
    assert wv2.widths(["red", "blue"]) == [60.0, 60.0]
    assert wv2.wavelengths()[0] == wv2.band("pan").center_nm
    with pytest.raises(VHRFMInputError) as exc:
        wv2.band("swir1")
    assert "coastal" in str(exc.value)
    assert exc.value.found == "swir1"
    with pytest.raises(VHRFMInputError):
        wv2.band_names("thermal")
    with pytest.raises(VHRFMInputError):
        get_sensor("rapideye").gsd("pan")


@pytest.mark.parametrize(
    "alias, sid",
    [
        ("WV2", "worldview2"),
        ("worldview-2", "worldview2"),
        ("WorldView-3", "worldview3"),
        ("PHR", "pleiades"),
        ("Pléiades", "pleiades"),
        ("PLEIADES", "pleiades"),
        ("Pléiades Neo", "pleiades_neo"),
        ("PNEO", "pleiades_neo"),
        ("SPOT-6", "spot6_7"),
        ("spot7", "spot6_7"),
        ("GE01", "geoeye1"),
        ("QB02", "quickbird"),
        ("RapidEye", "rapideye"),
        ("S2A", "sentinel2"),
        ("Sentinel-2", "sentinel2"),
        ("RGB", "aerial_rgb"),
        ("rgbn", "aerial_rgbn"),
        ("  worldview2 ", "worldview2"),
    ],
)
def test_alias_lookup(alias, sid):
    assert get_sensor(alias).id == sid


def test_unknown_sensor_names_known_ids():
    with pytest.raises(VHRFMInputError) as exc:
        get_sensor("landsat9")
    msg = str(exc.value)
    for sid in ("worldview2", "pleiades", "sentinel2"):
        assert sid in msg
    assert exc.value.found == "landsat9"
    with pytest.raises(VHRFMInputError):
        get_sensor("")


def test_check_band_count():
    wv2 = get_sensor("worldview2")
    wv2.check_band_count(9)
    wv2.check_band_count(8, wv2.band_names("ms"))
    wv2.check_band_count(np.int64(8), wv2.band_names("ms"))
    with pytest.raises(VHRFMInputError) as exc:
        wv2.check_band_count(4, wv2.band_names("ms"))
    assert exc.value.expected == 8
    assert exc.value.found == 4
    assert "band count does not match sensor" in str(exc.value)
    with pytest.raises(VHRFMInputError) as exc:
        get_sensor("pleiades").check_band_count(3)
    assert exc.value.expected == 5 and exc.value.found == 3


def test_register_sensor_and_duplicates():
    toy = _toy_sensor()
    assert "toy_cam" not in SENSORS
    register_sensor(toy)
    try:
        assert get_sensor("toy_cam") is toy
        assert get_sensor("TOYCAM X") is toy
        assert "toy_cam" in list_sensors()
        with pytest.raises(VHRFMInputError):
            register_sensor(_toy_sensor())
        with pytest.raises(VHRFMInputError):
            register_sensor(_toy_sensor("toy_cam2", aliases=("wv2",)))  # alias clash
    finally:
        del SENSORS["toy_cam"]
    assert "toy_cam2" not in SENSORS
    with pytest.raises(VHRFMInputError):
        get_sensor("toy_cam")


def test_register_builtin_duplicate_raises():
    with pytest.raises(VHRFMInputError):
        register_sensor(get_sensor("worldview2"))


def test_invalid_definitions_raise():
    with pytest.raises(VHRFMInputError):
        Band("red", 650.0, 0.0, "ms")
    with pytest.raises(VHRFMInputError):
        Band("red", 650.0, 50.0, "thermal")
    with pytest.raises(VHRFMInputError):
        Band("Red", 650.0, 50.0, "ms")
    with pytest.raises(VHRFMInputError):  # group "pan" has no GSD
        Sensor("bad", "Bad", (Band("pan", 600.0, 300.0, "pan"),), {"ms": 1.0}, 8, "aerial", "x")
    with pytest.raises(VHRFMInputError):  # duplicate band names
        Sensor("bad", "Bad", (Band("red", 650.0, 50.0, "ms"),) * 2, {"ms": 1.0}, 8, "aerial", "x")
    with pytest.raises(VHRFMInputError):
        Sensor("bad", "Bad", (Band("red", 650.0, 50.0, "ms"),), {"ms": 1.0}, 8, "balloon", "x")


def test_true_colour_worldview2_ms():
    wv2 = get_sensor("worldview2")
    ms = wv2.band_names("ms")
    r, g, b = true_colour_indices(wv2.wavelengths(ms))
    assert (ms[r], ms[g], ms[b]) == ("red", "green", "blue")


@pytest.mark.parametrize("sid", ["pleiades", "quickbird", "rapideye", "aerial_rgb", "pleiades_neo"])
def test_true_colour_other_sensors(sid):
    s = get_sensor(sid)
    ms = s.band_names("ms")
    idx = true_colour_indices(s.wavelengths(ms))
    assert [ms[i] for i in idx] == ["red", "green", "blue"]


def test_true_colour_sentinel2():
    s2 = get_sensor("sentinel2")
    names = s2.band_names()
    assert [names[i] for i in true_colour_indices(s2.wavelengths())] == ["b04", "b03", "b02"]


def test_true_colour_fallbacks():
    assert true_colour_indices(get_sensor("worldview2").wavelengths(["pan"])) == [0, 0, 0]
    assert true_colour_indices([1600.0]) == [0, 0, 0]
    two = true_colour_indices([480.0, 840.0])
    assert len(two) == 3 and all(0 <= i < 2 for i in two)
    swir = get_sensor("worldview3").wavelengths(get_sensor("worldview3").band_names("swir"))
    far = true_colour_indices(swir)
    assert len(far) == 3 and all(0 <= i < len(swir) for i in far)
    assert true_colour_indices(np.array([650.0, 560.0, 480.0])) == [0, 1, 2]
    with pytest.raises(VHRFMInputError):
        true_colour_indices([])
