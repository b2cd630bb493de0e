"""Benchmarks (``make bench``): each writes a JSON file under ``results/bench/``.

``io``: windowed tile reading + normalisation throughput versus one plain rasterio full read of the
same file, as a ratio measured in the same run. ``pretrain``: the pretraining loop vs a bare loop.
``scene``: whole-scene prediction end to end vs the model alone, and peak RSS for two scene sizes.
``quant``: int8 in ONNX Runtime, dynamic vs static (calibrated) quantisation, for the teacher's and the students'
architectures: latency, size, fidelity to PyTorch, and the students' speed-ups over the teacher in each precision.
Timings are the best of ``repeats`` runs (wall clock), on whatever machine runs it; the JSON records the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import rasterio

from vhrfm.data.io import iter_tiles, raster_info
from vhrfm.data.normalize import Normalizer, band_statistics
from vhrfm.timing import significant

DEFAULT_IO_FILES = (
    "pretrain/worldview2_8band_pansharpening/pan.tif",   # GeoTIFF, striped, uint16
    "pretrain/airbus_pleiades_aircraft/images/014de911-7810-4f7d-8967-3e5402209f4a.jpg",  # 2560x2560 JPEG
)


def machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "processor": platform.processor()}


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_io(path: str | Path, tile: int = 256, overlap: int = 32, repeats: int = 3) -> dict:
    info = raster_info(path)
    mpx = info.width * info.height / 1e6
    with rasterio.open(path) as src:
        sample = src.read(window=((0, min(256, src.height)), (0, min(256, src.width))))
    norm = Normalizer.from_stats(band_statistics([(sample, np.ones(sample.shape[1:], bool))]))

    def full():
        with rasterio.open(path) as src:
            src.read()

    def tiled():
        for _, data, _ in iter_tiles(path, tile, overlap, skip_empty=False):
            norm(data)

    t_full = _best(full, repeats)
    t_tiled = _best(tiled, repeats)
    try:
        shown = str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = Path(path).name
    return {"file": shown, "driver": info.driver, "shape": list(info.shape), "dtype": info.dtype,
            "tile": tile, "overlap": overlap, "repeats": repeats, "megapixels": round(mpx, 3),
            "full_read_s": round(t_full, 6), "tiled_read_normalise_s": round(t_tiled, 6),
            "full_read_mpx_s": round(mpx / t_full, 2), "tiled_mpx_s": round(mpx / t_tiled, 2),
            "ratio_tiled_vs_full": round(t_full / t_tiled, 3)}


def run_io(out_dir: Path, files=None, repeats: int = 3) -> Path:
    from vhrfm.config import data_dir

    paths = [Path(f) for f in files] if files else [data_dir() / f for f in DEFAULT_IO_FILES]
    results = [bench_io(p, repeats=repeats) for p in paths]
    out = {"benchmark": "io", "what": "windowed tiles (256 px, 32 overlap) read + normalised vs one full rasterio read",
           "goal": "ratio_tiled_vs_full close to 1 (tiling costs little over a full read)", "machine": machine(),
           "results": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "io.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def bench_pretrain(corpus, cfg: dict, steps: int = 20, warmup: int = 3, seed: int = 0, objective: str = "mae") -> dict:
    """Images/s of the real pretraining loop (corpus sampling, views, step, logging) vs a bare loop.

    The bare loop is the same objective and batch size on one in-memory tensor batch (two views of it for the
    two-view objectives), on the device and with the autocast :func:`vhrfm.ssl.train.pretrain` uses (the GPU
    with bf16 when there is one), through the same call (:func:`vhrfm.ssl.train.objective_loss`): forward,
    backward, optimiser step, nothing else. Both exclude ``warmup`` steps.
    """
    import tempfile

    import torch

    from vhrfm.ssl.train import build_objective, pretrain

    cfg = {**cfg, "steps": warmup + steps, "ckpt_every": 10**9, "log_every": 10**9, "warmup_steps": 1}
    # two runs that differ only by ``steps`` steps: set-up and saving cancel in the difference. An untimed run goes
    # first: in a fresh process the first run also pays the device's start-up (on an H200, 2026-12-04, that made
    # the first pair report our loop as fast as the bare one, and the next pairs 0.3-0.5 of it)
    with tempfile.TemporaryDirectory() as d:
        pretrain("bench", objective, {**cfg, "steps": max(1, warmup)}, corpus, d, seed=seed, progress=False, resume=False)
        t0 = time.perf_counter()
        pretrain("bench", objective, {**cfg, "steps": warmup}, corpus, d, seed=seed, progress=False, resume=False)
        t1 = time.perf_counter()
        pretrain("bench", objective, cfg, corpus, d, seed=seed, progress=False, resume=False)
        t2 = time.perf_counter()
    loop_s = max((t2 - t1) - (t1 - t0), 1e-9)
    ours = cfg["batch_size"] * steps / loop_s

    from vhrfm.ssl.train import autocast_for, n_views, objective_loss, train_device
    from vhrfm.ssl.views import View

    device = train_device()
    amp = autocast_for(device)
    torch.manual_seed(seed)
    model = build_objective(objective, cfg).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
    p0 = corpus.products[0]
    x = torch.randn(cfg["batch_size"], len(p0.wavelengths), cfg["crop"], cfg["crop"], device=device)
    wl, wd = torch.from_numpy(p0.wavelengths), torch.from_numpy(p0.widths)
    gsd = torch.full((cfg["batch_size"],), p0.gsd, device=device)
    views = [View(x, wl, wd, gsd), View(x.flip(-1), wl, wd, gsd)][:n_views(objective)]

    def one(i):
        with amp:
            out = objective_loss(model, objective, views, torch.Generator().manual_seed(i))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if hasattr(model, "update_momentum"):
            model.update_momentum(0.5)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(warmup):
        one(i)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    sync()
    bare = cfg["batch_size"] * steps / (time.perf_counter() - t0)
    return {"objective": objective, "device": str(device), "encoder": cfg["encoder"], "batch_size": cfg["batch_size"], "crop": cfg["crop"], "steps": steps,
            "ours_images_per_s": round(ours, 2), "bare_images_per_s": round(bare, 2), "ratio_ours_vs_bare": round(ours / bare, 3)}


def run_pretrain(out_dir: Path, profile: str = "cpu", steps: int = 20) -> Path:
    import torch

    from vhrfm.config import results_dir
    from vhrfm.data.datasets import load_splits
    from vhrfm.data.normalize import load_stats
    from vhrfm.ssl.corpus import build_corpus
    from vhrfm.ssl.run import method_config

    res = results_dir(profile) / "data"
    corpus = build_corpus(load_splits(res / "splits.csv"), load_stats(res / "norm_stats.json"), crop=96, crops_per_tile=2,
                          max_tiles_per_product=20, seed=0, progress=False)
    _, cfg = method_config(profile, "mae")
    r = bench_pretrain(corpus, cfg, steps=steps)
    out = {"benchmark": "pretrain", "profile": profile, "device": "cuda" if torch.cuda.is_available() else "cpu",
           "torch_threads": torch.get_num_threads(),
           "what": "MAE pretraining images/s: our loop with its data pipeline vs a bare loop on one in-memory batch",
           "goal": "ratio_ours_vs_bare >= 0.9", "machine": machine(), "results": r}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pretrain.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def mosaic_scene(src_path: str | Path, out_path: str | Path, reps: int) -> Path:
    """A ``reps`` x ``reps`` mosaic of a real georeferenced scene (copied window by window), to vary scene size."""
    with rasterio.open(src_path) as src:
        prof = src.profile.copy()
        h, w = src.height, src.width
        prof.update(driver="GTiff", height=h * reps, width=w * reps, tiled=True, blockxsize=256, blockysize=256,
                    compress="deflate")
        data = src.read()
        with rasterio.open(out_path, "w", **prof) as dst:
            for i in range(reps):
                for j in range(reps):
                    dst.write(data, window=rasterio.windows.Window(j * w, i * h, w, h))
    return Path(out_path)


_SCENE_CHILD = """
import json, sys, time
from vhrfm.apps.scene import iter_batches, pixel_size_m, predict_scene
from vhrfm.apps.taskmodel import load_task_model
from vhrfm.data.io import open_raster, tile_grid
from vhrfm.runtime import with_runtime
card, scene, out, tile, overlap, bs, runtime = sys.argv[1:8]
tile, overlap, bs = int(tile), int(overlap), int(bs)
m = with_runtime(load_task_model(card), runtime)
# one warm-up batch before either timing (first-call costs: thread pools, allocator, kernel selection), timed apart
with open_raster(scene) as src:
    gsd = pixel_size_m(src)
    _, raw, valid = next(iter_batches(src, tile_grid(src.height, src.width, tile, overlap), tile, bs))
t0 = time.perf_counter()
m.probs(raw, gsd=gsd, valid=valid)
warmup_s = time.perf_counter() - t0
del raw, valid
s = predict_scene(scene, m, out, tile=tile, overlap=overlap, batch_size=bs, write_map=True, progress=False)
# model only, on the same windows, read into memory beforehand (after the prediction: its peak RSS is its own)
with open_raster(scene) as src:
    batches = [(raw, valid) for _, raw, valid in iter_batches(src, tile_grid(src.height, src.width, tile, overlap), tile, bs)]
t0 = time.perf_counter()
for raw, valid in batches:
    m.probs(raw, gsd=gsd, valid=valid)
s["model_only_s"] = time.perf_counter() - t0
s["warmup_s"] = warmup_s
s["network"] = type(m.net).__name__
print(json.dumps(s))
"""


def bench_scene(card: str | Path, scene: str | Path, reps: tuple[int, ...] = (1, 3), tile: int = 256, overlap: int = 32,
                batch_size: int = 8, runtime: str = "torch") -> list[dict]:
    """End-to-end whole-scene prediction (read, model, stitch, COG, polygons, map) vs the model alone on the
    same windows, and the peak RSS of the prediction, for mosaics of ``scene`` of ``reps`` x ``reps`` copies, with the
    network run by ``runtime`` (:data:`vhrfm.runtime.RUNTIMES`; the ONNX graph's export is part of the warm-up).

    Each size runs in a fresh process so its peak RSS is its own. In it, one batch goes through the model first
    (``warmup_batch_s``, reported): without it the prediction, run first, paid the process's first-call costs and the
    model-only loop after it did not, which measured the order of the two, not the pipeline's overhead.
    """
    import subprocess
    import sys
    import tempfile

    from vhrfm.runtime import RUNTIMES

    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    out = []
    with tempfile.TemporaryDirectory() as d:
        for r in reps:
            path = mosaic_scene(scene, Path(d) / f"scene_x{r}.tif", r)
            proc = subprocess.run([sys.executable, "-c", _SCENE_CHILD, str(card), str(path), str(Path(d) / f"out_x{r}"),
                                   str(tile), str(overlap), str(batch_size), runtime], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"scene benchmark failed for x{r}:\n{proc.stderr[-3000:]}")
            s = json.loads(proc.stdout.strip().splitlines()[-1])
            mpx = s["width"] * s["height"] / 1e6
            out.append({"mosaic": f"{r}x{r}", "runtime": runtime, "network": s["network"], "width": s["width"], "height": s["height"], "megapixels": round(mpx, 3),
                        "tiles": s["tiles"], "end_to_end_s": s["runtime_s"], "end_to_end_mpx_s": significant(mpx / s["runtime_s"]),
                        "model_only_s": significant(s["model_only_s"]),
                        "model_only_mpx_s": significant(mpx / s["model_only_s"]),
                        "ratio_end_to_end_vs_model": significant(s["model_only_s"] / s["runtime_s"]),
                        # the model's own share of the run (its calls inside the prediction, same windows, same process
                        # state): the stricter reading, insensitive to what ran before the separate model-only loop
                        "ratio_end_to_end_vs_model_in_run": significant(s["timing_s"]["model_s"] / s["runtime_s"]),
                        "timing_s": s["timing_s"], "warmup_batch_s": significant(s["warmup_s"]), "peak_rss_mb": s["peak_rss_mb"]})
    return out


def run_scene(out_dir: Path, profile: str = "cpu", task: str = "wildfire") -> Path:
    import torch

    from vhrfm.apps.taskmodel import resolve_task_model
    from vhrfm.config import data_dir

    card = resolve_task_model(task, None, profile)
    scene = data_dir() / "wildfire/cems_emsr382_sentinel2/EMSR382_AOI01_01/image_post_s2_truecolor_rgb.tif"
    if not scene.exists():
        scene = sorted((data_dir() / "wildfire/cems_emsr382_sentinel2").glob("*/image_post_s2_truecolor_rgb.tif"))[0]
    results = bench_scene(card, scene)
    flat = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    # what an analyst waits for: the whole scene with the student and the teacher, in PyTorch and ONNX Runtime
    models = {"default": card, "teacher": resolve_task_model(task, "teacher", profile)}
    runs = {f"{who}_{rt}": bench_scene(path, scene, reps=(2,), runtime=rt)[0]
            for who, path in models.items() for rt in ("torch", "onnx")}
    ref = runs["teacher_torch"]["end_to_end_s"]
    runtimes = {"mosaic": "2x2", "models": {k: Path(v).stem for k, v in models.items()},
                "end_to_end_s": {k: r["end_to_end_s"] for k, r in runs.items()},
                "model_s": {k: significant(r["timing_s"]["model_s"]) for k, r in runs.items()},
                "speedup_vs_teacher_torch": {k: significant(ref / r["end_to_end_s"]) for k, r in runs.items()},
                "peak_rss_mb": {k: r["peak_rss_mb"] for k, r in runs.items()}}
    out = {"benchmark": "scene", "task": task, "model": card.stem, "profile": profile,
           "device": "cuda" if torch.cuda.is_available() else "cpu", "torch_threads": torch.get_num_threads(),
           "scene": str(scene.relative_to(data_dir())), "what": "whole-scene prediction end to end (read, model, stitch, "
           "COG, polygons, map) vs the model alone on the same windows; peak RSS for two scene sizes (mosaics of the scene)",
           "goal": "ratio_end_to_end_vs_model >= 0.8 (also read as ratio_end_to_end_vs_model_in_run, the model's share "
                   "of the run's own time); peak RSS flat in scene size",
           "peak_rss_ratio_largest_vs_smallest": round(flat, 3), "machine": machine(), "results": results,
           "runtimes": runtimes}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "scene.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def bench_quant(encoders: dict, reference: str, wavelengths, widths, gsd: float, calib: np.ndarray, evaluation: np.ndarray,
                rounds: int = 20, min_block_s: float = 0.02, settle_s: float = 0.05, min_cosine: float = 0.99, seed: int = 0,
                progress: bool = True) -> dict:
    """Each encoder of ``encoders`` ({name: any-band encoder}) fixed to one band set and exported to ONNX (fp32), then
    quantised to int8 dynamically and statically (calibrated on ``calib``). Per model and precision: file size,
    fidelity to PyTorch on ``evaluation`` windows (mean cosine of the pooled features), and batch-one latency;
    speed-ups from interleaved timings (:func:`vhrfm.distill.efficiency.paired_speedup`): each int8 graph over its
    own fp32 graph, every model over ``encoders[reference]`` in the same precision, and each model's ``fastest``
    precision (lowest latency among those with ``cosine_to_torch >= min_cosine``) over the reference's fastest: what
    a deployment of each would run."""
    import tempfile

    import torch
    from tqdm.auto import tqdm

    from vhrfm.distill.efficiency import (FixedBands, _median_time, export_onnx, fastest_precision, mean_cosine, n_params,
                                          ort_session, paired_speedup, quantize_int8, quantize_static_int8)

    torch.manual_seed(seed)
    x1 = torch.as_tensor(evaluation[:1])
    feed = {"image": evaluation[:1]}
    precisions = ("fp32", "int8_dynamic", "int8_static")
    sessions, out = {}, {}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        for name, enc in tqdm(encoders.items(), desc="quantise", disable=not progress):
            model = FixedBands(enc, wavelengths, widths, gsd).eval()
            ref = model(torch.as_tensor(evaluation)).numpy()
            fp32 = export_onnx(model, x1, Path(d) / f"{name}.onnx")
            files = {"fp32": fp32, "int8_dynamic": quantize_int8(fp32, Path(d) / f"{name}.dyn.onnx"),
                     "int8_static": quantize_static_int8(fp32, Path(d) / f"{name}.static.onnx", calib)}
            row = {"params": n_params(enc)}
            for prec in precisions:
                sess = sessions[name, prec] = ort_session(files[prec])
                y = np.concatenate([sess.run(None, {"image": evaluation[i:i + 1]})[0] for i in range(len(evaluation))])
                row[prec] = {"size_mb": round(os.path.getsize(files[prec]) / 1e6, 3),
                             "cosine_to_torch": round(mean_cosine(y, ref), 5),
                             "latency_ms": round(1e3 * _median_time(lambda: sess.run(None, feed), 10), 3)}
            out[name] = row
        kw = {"rounds": rounds, "min_block_s": min_block_s, "settle_s": settle_s}  # settle: the sessions' spinning threads

        def run(key):
            s = sessions[key]
            return lambda: s.run(None, feed)

        for name in tqdm(encoders, desc="paired speed-ups", disable=not progress):
            for prec in ("int8_dynamic", "int8_static"):
                p = paired_speedup(run((name, "fp32")), run((name, prec)), **kw)
                out[name][prec]["speedup_vs_own_fp32"], out[name][prec]["speedup_vs_own_fp32_iqr"] = p["median"], p["iqr"]
            if name == reference:
                continue
            for prec in precisions:
                p = paired_speedup(run((reference, prec)), run((name, prec)), **kw)
                out[name][prec]["speedup_vs_reference"], out[name][prec]["speedup_vs_reference_iqr"] = p["median"], p["iqr"]
        # deployment: each network in its fastest precision that keeps the features (cosine >= min_cosine)
        for name, row in out.items():
            row["fastest"] = fastest_precision({prec: row[prec]["latency_ms"] for prec in precisions},
                                               {prec: row[prec]["cosine_to_torch"] for prec in precisions}, min_cosine)
        best_ref = out[reference]["fastest"]
        for name in encoders:
            if name != reference:
                p = paired_speedup(run((reference, best_ref)), run((name, out[name]["fastest"])), **kw)
                out[name]["speedup_fastest_vs_reference_fastest"] = p["median"]
                out[name]["speedup_fastest_vs_reference_fastest_iqr"] = p["iqr"]
    return {"reference": reference, "input": list(evaluation.shape[1:]), "min_cosine": min_cosine,
            "settle_ms": round(1e3 * settle_s, 3), "models": out}


def run_quant(out_dir: Path, profile: str = "cpu", n_calib: int = 16, n_eval: int = 8, rounds: int = 20) -> Path:
    """:func:`bench_quant` for the profile's teacher and students, on real Pleiades RGB windows at 0.5 m (calibration
    and evaluation windows from different scenes). Trained weights where the pipeline has written them (the teacher,
    the self-supervised KD students), else the same architectures at random initialisation: the latency does not depend
    on the weights, the fidelity does, and the JSON says which was measured."""
    import torch

    from vhrfm.config import load_profile, models_dir, results_dir
    from vhrfm.distill.efficiency import calibration_windows
    from vhrfm.distill.run import EFFICIENCY_BANDS
    from vhrfm.checkpoint import load_encoder
    from vhrfm.models import create_encoder
    from vhrfm.sensors import get_sensor

    p = load_profile(profile)
    size = p["distill"]["bench_size"]
    calib, evaluation = calibration_windows(n_calib, n_eval, size, seed=p["seed"])
    mdir = models_dir(profile)
    done = results_dir(profile) / "distillation" / "metrics.json"  # the teacher is the pretraining's best method
    if not done.exists():
        raise FileNotFoundError(f"{done} is missing: its teacher_encoder names the teacher's architecture")
    archs = {"teacher": (mdir / "teacher.safetensors", json.loads(done.read_text())["teacher_encoder"])}
    for s in p["distill"]["students"]:
        archs[s] = (mdir / "distill" / f"kd_{s}.safetensors", s)
    encoders, weights = {}, {}
    for name, (path, arch) in archs.items():
        if path.exists():
            encoders[name], weights[name] = load_encoder(path).eval(), f"trained ({path.name})"
        else:
            torch.manual_seed(p["seed"])
            encoders[name], weights[name] = create_encoder(arch).eval(), f"random init ({arch}; {path} not written yet)"
    sensor = get_sensor(EFFICIENCY_BANDS["sensor"])
    r = bench_quant(encoders, "teacher", sensor.wavelengths(EFFICIENCY_BANDS["bands"]),
                    sensor.widths(EFFICIENCY_BANDS["bands"]), EFFICIENCY_BANDS["gsd"], calib, evaluation, rounds=rounds,
                    seed=p["seed"])
    out = {"benchmark": "quant", "profile": profile, "torch_threads": torch.get_num_threads(), "weights": weights,
           "what": "ONNX Runtime int8, dynamic vs static (QDQ, calibrated on real Pleiades windows), batch one",
           "goal": "int8 faster than fp32 (speedup_vs_own_fp32 > 1) at cosine_to_torch >= 0.99; the students' speed-up "
                   "over the teacher in each precision", "calibration_windows": n_calib, "evaluation_windows": n_eval,
           "machine": machine(), "results": r}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "quant.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["io", "pretrain", "scene", "quant"], default=None)
    args = ap.parse_args(argv)
    if args.only in (None, "io"):
        print(run_io(Path(args.out), repeats=args.repeats).read_text())
    if args.only in (None, "pretrain"):
        print(run_pretrain(Path(args.out)).read_text())
    if args.only in (None, "scene"):
        print(run_scene(Path(args.out)).read_text())
    if args.only in (None, "quant"):
        print(run_quant(Path(args.out)).read_text())


if __name__ == "__main__":
    main()
