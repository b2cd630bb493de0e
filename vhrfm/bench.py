"""Benchmarks (``make bench``): each writes a JSON file under ``results/bench/``.

``io``: windowed tile reading + normalisation throughput versus one plain rasterio full read of the
same file, as a ratio measured in the same run. Timings are the best of ``repeats`` runs (wall clock),
on whatever machine runs it; the JSON records the machine.
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


def bench_pretrain(corpus, cfg: dict, steps: int = 20, warmup: int = 3, seed: int = 0) -> dict:
    """Images/s of the real pretraining loop (corpus sampling, views, MAE step, logging) vs a bare loop.

    The bare loop is the same objective and batch size on one in-memory tensor batch: forward, backward,
    optimiser step, nothing else. Both exclude ``warmup`` steps.
    """
    import tempfile

    import torch

    from vhrfm.ssl.train import build_objective, pretrain

    cfg = {**cfg, "steps": warmup + steps, "ckpt_every": 10**9, "log_every": 10**9, "warmup_steps": 1}
    # two runs that differ only by ``steps`` steps: set-up and saving cancel in the difference
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        pretrain("bench", "mae", {**cfg, "steps": warmup}, corpus, d, seed=seed, progress=False, resume=False)
        t1 = time.perf_counter()
        pretrain("bench", "mae", cfg, corpus, d, seed=seed, progress=False, resume=False)
        t2 = time.perf_counter()
    loop_s = max((t2 - t1) - (t1 - t0), 1e-9)
    ours = cfg["batch_size"] * steps / loop_s

    torch.manual_seed(seed)
    model = build_objective("mae", cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg["lr"])
    p0 = corpus.products[0]
    x = torch.randn(cfg["batch_size"], len(p0.wavelengths), cfg["crop"], cfg["crop"])
    wl, wd = torch.from_numpy(p0.wavelengths), torch.from_numpy(p0.widths)
    gsd = torch.full((cfg["batch_size"],), p0.gsd)

    def one(i):
        out = model(x, wl, gsd, wd, torch.Generator().manual_seed(i))
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    for i in range(warmup):
        one(i)
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    bare = cfg["batch_size"] * steps / (time.perf_counter() - t0)
    return {"encoder": cfg["encoder"], "batch_size": cfg["batch_size"], "crop": cfg["crop"], "steps": steps,
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["io", "pretrain"], default=None)
    args = ap.parse_args(argv)
    if args.only in (None, "io"):
        print(run_io(Path(args.out), repeats=args.repeats).read_text())
    if args.only in (None, "pretrain"):
        print(run_pretrain(Path(args.out)).read_text())


if __name__ == "__main__":
    main()
