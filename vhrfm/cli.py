"""The ``vhrfm`` command line. Every command has ``--help``; bad input exits with code 2 and one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vhrfm.config import APP_TASKS
from vhrfm.errors import VHRFMInputError

app = typer.Typer(help="vhrfm: foundation model for very-high-resolution multispectral imagery.", no_args_is_help=True,
                  add_completion=False)
data_app = typer.Typer(help="Data preparation: splits and normalisation statistics.", no_args_is_help=True)
app.add_typer(data_app, name="data")

PROFILE = typer.Option("cpu", "--profile", "-p", help="params.yaml profile: smoke, cpu or gpu.")


@app.command()
def sensors(sensor: Optional[str] = typer.Argument(None, help="A sensor id or alias; all sensors when omitted.")):
    """List the sensor registry, or the bands of one sensor."""
    from vhrfm.sensors import SENSORS, get_sensor

    if sensor is None:
        for s in SENSORS.values():
            typer.echo(f"{s.id:14s} {s.name:28s} bands={len(s.bands):2d} gsd={s.gsd_m} bits={s.bit_depth}")
        return
    s = get_sensor(sensor)
    typer.echo(f"{s.name} ({s.id}); GSD {s.gsd_m} m; {s.bit_depth}-bit; {s.reference}")
    for b in s.bands:
        typer.echo(f"  {b.name:10s} {b.group:4s} centre {b.center_nm:7.1f} nm  width {b.width_nm:6.1f} nm")


@app.command()
def info(path: Path = typer.Argument(..., help="A raster file (GeoTIFF, JPEG, PNG)."),
         sensor: Optional[str] = typer.Option(None, help="Check the band count against this sensor (PAN, MS or all bands)."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Check a raster and print its size, bands, dtype, CRS and resolution."""
    from dataclasses import asdict

    from vhrfm.data.io import raster_info
    from vhrfm.sensors import get_sensor

    meta = raster_info(path)
    if sensor:
        s = get_sensor(sensor)
        allowed = sorted({len(s.band_names(g)) for g in s.gsd_m} | {len(s.bands)} - {0})
        if meta.count not in allowed:
            raise VHRFMInputError(f"band count does not match sensor {s.id}", expected=f"one of {allowed}",
                                  found=meta.count, path=path)
    if as_json:
        typer.echo(json.dumps(asdict(meta)))
    else:
        for k, v in asdict(meta).items():
            typer.echo(f"{k:10s} {v}")


@data_app.command("prepare")
def data_prepare(profile: str = PROFILE,
                 out_dir: Optional[Path] = typer.Option(None, help="Output folder (default: results/data, or results/PROFILE/data for other profiles).")):
    """Write the split table (spatially disjoint) and per-product normalisation statistics."""
    from vhrfm.data.prepare import prepare

    typer.echo(json.dumps(prepare(profile, out_dir)))


@app.command()
def notebook(source: Path = typer.Argument(..., help="jupytext .py notebook"),
             output: Path = typer.Argument(..., help="executed .ipynb to write"),
             profile: str = PROFILE):
    """Execute a chapter notebook with papermill for one profile (what the DVC stages run)."""
    from vhrfm.config import load_profile
    from vhrfm.pipeline import run_notebook

    load_profile(profile)  # unknown profile: clear error before starting a kernel
    run_notebook(source, output, {"profile": profile})


@app.command("pretrain")
def pretrain_cmd(profile: str = PROFILE,
                 method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="Method(s) from params.yaml (default: all)."),
                 out_dir: Optional[Path] = typer.Option(None, help="Output folder (default: models/ssl, or models/PROFILE/ssl).")):
    """Self-supervised pretraining of every method in the profile (MAE, contrastive, hybrid, ablations).

    The method of the profile's seed study (pretrain.seed_study) is also trained at the study's extra seeds, into
    OUT_DIR/seeds/, whenever it is trained (all methods, or that method named with --method).

    Runs on one process, or on several with torchrun (DDP): torchrun --nproc_per_node 2 -m vhrfm.cli pretrain
    """
    from vhrfm.ssl.run import run_pretraining

    s = run_pretraining(profile, method, out_dir)
    typer.echo(json.dumps({k: v for k, v in s.items() if k != "methods"}))


@app.command("distill")
def distill_cmd(profile: str = PROFILE):
    """Self-supervised KD of the teacher into every student of the profile, and the same students trained with
    SSL from scratch (models/distill/, or models/PROFILE/distill/)."""
    from vhrfm.distill.train import train_students

    typer.echo(json.dumps(train_students(profile)))


@app.command()
def predict(scene: Path = typer.Argument(..., help="A scene (GeoTIFF; wildfire needs a CRS) with the model's bands in its "
                                         "band order, or another sensor's bands with --sensor."),
            out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (created; files in it are replaced only on success)."),
            task: str = typer.Option("wildfire", "--task", "-t", help=f"Task: {', '.join(APP_TASKS)}."),
            model: Optional[str] = typer.Option(None, "--model", "-m", help="Task-model card (.json), name under models/TASK/, "
                                                "or 'student' / 'teacher' / 'best_val' / 'few_label' from models/TASK/index.json "
                                                "(default: the distilled student chosen on validation)."),
            threshold: Optional[float] = typer.Option(None, help="Probability threshold (default: the one chosen on validation)."),
            tile: Optional[int] = typer.Option(None, help="Window side in pixels (default: the training tile size)."),
            overlap: int = typer.Option(32, help="Pixels shared by neighbouring windows (context at tile borders)."),
            batch_size: int = typer.Option(8, help="Windows per forward pass."),
            runtime: str = typer.Option("torch", help="torch, or onnx: the network exported to ONNX Runtime for the "
                                        "scene's bands and tile (a few seconds), several times faster for a small "
                                        "student on a CPU; probabilities agree with torch to about 1e-5."),
            tta: bool = typer.Option(False, "--tta", help="D4 test-time augmentation: each window's probabilities are the "
                                     "mean over its 8 rotations and flips (8x the model time; classical rules are "
                                     "unchanged). Chapter 4 measures what it gives on the test split."),
            min_area_m2: Optional[float] = typer.Option(None, help="wildfire: drop polygons smaller than this (default: 4 pixels)."),
            sensor: Optional[str] = typer.Option(None, help="The scene's sensor, when its bands differ from the model's "
                                                 "(any-band models only; normalised by the scene's own statistics)."),
            bands: Optional[str] = typer.Option(None, help="With --sensor: the scene's band names in file order, comma-separated "
                                                "(default: pan for 1 band, the sensor's MS bands otherwise)."),
            gsd: Optional[float] = typer.Option(None, help="megafauna: metres per pixel for a scene without CRS "
                                                "(points are then written in pixel coordinates)."),
            no_map: bool = typer.Option(False, "--no-map", help="Skip the folium map and the PNG preview."),
            cloud_mask: bool = typer.Option(True, help="wildfire: leave pixels the model card's cloud rule flags out of the "
                                            "mask (nodata) and the burned area."),
            profile: str = PROFILE,
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar.")):
    """Map a whole scene with a task model, streamed in overlapping windows (memory does not grow with its size).

    wildfire: probability and mask GeoTIFFs (COG), GeoJSON polygons with area, a folium map, a summary.
    megafauna: GeoJSON points with scores (duplicates across windows removed), a count summary, a map.
    On any error no output is left behind.
    """
    from dataclasses import replace

    from vhrfm.apps.scene import adapt_to_scene, predict_points_scene, predict_scene
    from vhrfm.apps.taskmodel import load_task_model, resolve_task_model

    from vhrfm.runtime import RUNTIMES, with_runtime

    if runtime not in RUNTIMES:  # before anything is read
        raise VHRFMInputError("unknown runtime", expected=list(RUNTIMES), found=runtime)
    m = adapt_to_scene(load_task_model(resolve_task_model(task, model, profile), task=task), scene, sensor, bands)
    m = with_runtime(replace(m, tta=tta), runtime)
    kw = dict(tile=tile or m.card.get("tile_size", 256), overlap=overlap, batch_size=batch_size, threshold=threshold,
              write_map=not no_map, progress=not quiet)
    if m.card.get("output") == "points":
        summary = predict_points_scene(scene, m, out_dir, gsd=gsd, **kw)
        keys = ("scene", "model", "threshold", "tta", "count", "gsd_m", "runtime_s", "mpx_per_s", "peak_rss_mb", "notes")
    else:
        summary = predict_scene(scene, m, out_dir, min_area_m2=min_area_m2, cloud_mask=cloud_mask, **kw)
        keys = ("scene", "model", "threshold", "tta", "area_km2", "cloud_km2", "polygons", "runtime_s", "mpx_per_s", "peak_rss_mb", "notes")
    typer.echo(json.dumps({**{k: summary[k] for k in keys}, "runtime": runtime}))
    typer.echo(f"outputs in {out_dir}: " + ", ".join(summary["outputs"].values()))


@app.command()
def paper(profile: str = PROFILE):
    """Render paper/paper.md with the chapters' metrics and figures into paper/build/PROFILE/paper.html."""
    from vhrfm.paper import render

    typer.echo(str(render(profile)))


@app.command()
def readme(check: bool = typer.Option(False, help="Only check that the README's results table is current (exit 1 if not)."),
           profile: str = PROFILE):
    """Write the README's results table from results/*/metrics.json (run after `dvc repro`)."""
    from vhrfm.paper import update_readme

    ok = update_readme(profile=profile, check=check)
    if check and not ok:
        typer.echo("README results table is stale: run `vhrfm readme`", err=True)
        raise typer.Exit(1)


@app.command("export")
def export_cmd(profile: str = PROFILE,
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="Release folder (default: release/PROFILE); replaced whole."),
               onnx: bool = typer.Option(True, help="Export ONNX graphs of the encoders (RGB) and task models (their bands).")):
    """Gather the release: weights (safetensors), ONNX graphs, model cards, the data card, the paper, CITATION.cff,
    with SHA-256 checksums (release/PROFILE/SHA256SUMS; `sha256sum -c SHA256SUMS` checks them)."""
    from vhrfm.release import export_release

    typer.echo(json.dumps(export_release(profile, out or Path("release") / profile, onnx=onnx)))


def main() -> None:
    try:
        app()
    except VHRFMInputError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
