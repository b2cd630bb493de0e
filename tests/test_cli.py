from typer.testing import CliRunner

from vhrfm.cli import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("sensors", "info", "data", "notebook"):
        assert cmd in r.output
    for sub in (["data", "prepare", "--help"], ["info", "--help"], ["notebook", "--help"]):
        assert runner.invoke(app, sub).exit_code == 0


def test_sensors_lists_registry():
    r = runner.invoke(app, ["sensors"])
    assert r.exit_code == 0 and "worldview3" in r.output and "pleiades_neo" in r.output
    r = runner.invoke(app, ["sensors", "WV2"])
    assert r.exit_code == 0 and "coastal" in r.output and "nir2" in r.output


def test_info_on_a_raster(make_raster):
    path, _ = make_raster(count=4)
    r = runner.invoke(app, ["info", str(path), "--sensor", "pleiades", "--json"])
    assert r.exit_code == 0 and '"count": 4' in r.output and "EPSG:32631" in r.output
