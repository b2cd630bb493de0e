"""Chapter 1 on a GPU lease: does a longer schedule of the teacher's method close the gap to random init?

The cpu profile pretrains ``contrastive_resnet18`` for 300 steps of 32 views (about 3 minutes on 2 cores) and its
frozen features lose to a random-init ResNet-18 on the chapter-1 probes. This script trains the same method, on
the same corpus (the cpu profile's crops), with the gpu profile's schedule settings (batch 256, its learning rate
and warm-up) for as many steps as a fixed wall-clock budget on one GPU allows, and writes snapshots on the way.
The probes then run here, on the CPU, with chapter 1's code and tasks, beside random init, RCF and pixel
statistics in the same run, so the numbers are comparable with ``results/pretraining/metrics.json``.

Three steps (the middle one on the GPU machine, through the device tool):

    python scripts/device_pretrain_scaling.py prepare --out .device_carry       # here: corpus -> .npz (8 bit)
    python scripts/device_pretrain_scaling.py train --carry .device_carry --out $OUT --budget-s 300   # GPU
    python scripts/device_pretrain_scaling.py probe --weights DIR --out results/device/pretrain_scaling.json

``train`` also measures the pretraining benchmark of issue 4 item 8 on the GPU (our loop with its data pipeline
vs a bare loop on in-memory tensors, same model and batch; :func:`vhrfm.bench.bench_pretrain`) unless told
``--no-bench``; ``bench`` measures only that, several times. ``train --variant`` trains views ablations of the
method (:data:`VARIANTS`); ``probe`` takes several runs' folders into one table.

The GPU machine has PyTorch and timm but not the geospatial stack (rasterio, geopandas, torchgeo): ``train`` reads
the corpus from the ``.npz`` written by ``prepare`` and stands in empty modules for those imports, which the
training code never calls. Weights come back as fp16 safetensors shards (the tool returns files of at most
16 MB); ``probe`` loads them back into fp32 encoders.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

METHOD = "contrastive_resnet18"
SHARD_BYTES = 14_000_000


GEO_PACKAGES = ("rasterio", "geopandas", "shapely", "pyproj", "torchgeo", "folium", "fiona")


def _stub_missing(prefixes=GEO_PACKAGES, force: bool = False) -> list[str]:
    """Empty stand-in modules for the geospatial packages when they are not installed (GPU machine only; ``force``
    stands them in even when installed, to check here that training never needs them)."""
    missing = []
    for name in prefixes:
        if force:
            missing.append(name)
            continue
        try:
            __import__(name)
        except ImportError:
            missing.append(name)

    class _Stub:
        """Stands for any attribute, call or subscript of a missing package (never reached by the training code)."""

        def __init__(self, *a, **k):
            pass

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Stub()

        def __call__(self, *a, **k):
            return _Stub()

        def __getitem__(self, key):
            return _Stub()

    class _Any(types.ModuleType):
        __path__: list = []

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return _Stub()

    class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname.split(".")[0] in missing:
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            return _Any(spec.name)

        def exec_module(self, module):
            pass

    if missing:
        sys.meta_path.insert(0, _Finder())
    return missing


def prepare(out: Path) -> None:
    from vhrfm.ssl.run import corpus_for

    corpus, _ = corpus_for("cpu", progress=True)
    out.mkdir(parents=True, exist_ok=True)
    arrays, meta = {}, []
    for i, p in enumerate(corpus.products):
        # 8 bits per band between the product's extremes (the tool carries at most 64 MiB; float16 is 231 MB):
        # a step of at most 0.1 normalised units, rounding noise about a third of that (the views jitter by 0.1)
        a = p.crops.astype(np.float32)
        lo, hi = a.min(axis=(0, 2, 3)), a.max(axis=(0, 2, 3))
        scale = np.maximum(hi - lo, 1e-6) / 255
        arrays[f"crops_{i}"] = np.round((a - lo[None, :, None, None]) / scale[None, :, None, None]).astype(np.uint8)
        meta.append({"key": p.key, "sensor": p.sensor, "source": p.source, "wavelengths": p.wavelengths.tolist(),
                     "widths": p.widths.tolist(), "gsd": float(p.gsd), "lo": lo.tolist(), "scale": scale.tolist()})
    np.savez_compressed(out / "corpus.npz", weights=corpus.weights, **arrays)
    (out / "corpus.json").write_text(json.dumps({"products": meta, "n_crops": corpus.n_crops, "profile": "cpu"}, indent=1))
    print(json.dumps({"n_crops": corpus.n_crops, "products": len(meta),
                      "mb": round((out / "corpus.npz").stat().st_size / 1e6, 1)}))


def _load_corpus(carry: Path):
    from vhrfm.ssl.corpus import Corpus, ProductCrops

    meta = json.loads((carry / "corpus.json").read_text())
    z = np.load(carry / "corpus.npz")
    def crops(i, m):
        lo, scale = np.asarray(m["lo"], np.float32), np.asarray(m["scale"], np.float32)
        return (z[f"crops_{i}"].astype(np.float32) * scale[None, :, None, None] + lo[None, :, None, None]).astype(np.float16)

    prods = [ProductCrops(m["key"], m["sensor"], m["source"], crops(i, m), np.asarray(m["wavelengths"], np.float32),
                          np.asarray(m["widths"], np.float32), m["gsd"]) for i, m in enumerate(meta["products"])]
    return Corpus(prods, weights=z["weights"]), meta


def _save_shards(path_stem: Path, encoder, card: dict) -> list[str]:
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().to(torch.float16) if v.is_floating_point() else v.detach().cpu()
             for k, v in encoder.state_dict().items()}
    shards, cur, size = [], {}, 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if cur and size + nbytes > SHARD_BYTES:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = v.contiguous()
        size += nbytes
    shards.append(cur)
    names = []
    for i, sh in enumerate(shards):
        name = f"{path_stem.name}.{i}.safetensors"
        save_file(sh, str(path_stem.parent / name), metadata={"card": json.dumps(card), "shard": f"{i}/{len(shards)}"})
        names.append(name)
    return names


# views variants of the teacher's method (overrides of its settings): the 2026-12-04 run read the burned probe's fall
# as the spectral invariances' doing; ``nospectral`` drops both (per-band gain / offset jitter and band dropout)
VARIANTS = {"views": {}, "nojitter": {"jitter": 0.0}, "nospectral": {"jitter": 0.0, "band_drop": 0.0}}


def file_stem(label: str) -> str:
    """The shard stem of a returned encoder: ``step<k>`` (the first run's records) or ``<variant>_step<k>``."""
    return f"step{label}" if label.isdigit() else label


def _gpu_setup(carry: Path, stub_all: bool, batch_size: int | None = None):
    """What ``train`` and ``bench`` start from on the GPU machine: the geospatial stand-ins, the carried corpus, the
    teacher's method with the gpu profile's settings (its snapshots are this script's to choose) and the record's
    header (device, torch, stand-ins, method)."""
    stubbed = _stub_missing(force=stub_all)
    import torch

    from vhrfm.ssl.run import method_config

    corpus, _ = _load_corpus(carry)
    objective, cfg = method_config("gpu", METHOD)
    cfg.pop("snapshots", None)
    if batch_size:
        cfg["batch_size"] = batch_size
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    header = {"device": dev, "torch": torch.__version__, "stubbed_modules": stubbed, "method": METHOD,
              "objective": objective}
    return corpus, objective, cfg, header


def train(carry: Path, out: Path, budget_s: float, max_steps: int, seed: int, stub_all: bool = False,
          calib_steps: int = 40, batch_size: int | None = None, variants: tuple[str, ...] = ("views",),
          bench: bool = True) -> None:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    corpus, objective, cfg, header = _gpu_setup(carry, stub_all, batch_size)
    from vhrfm.bench import bench_pretrain
    from vhrfm.checkpoint import load_encoder
    from vhrfm.ssl.train import SNAPSHOT_DIR, pretrain, snapshot_name

    out.mkdir(parents=True, exist_ok=True)
    record = {**header, "corpus_crops": corpus.n_crops, "variants": {v: VARIANTS[v] for v in variants}}
    print(json.dumps(record), flush=True)

    # calibration: seconds per step of the real loop at this batch size (set-up cancels in the difference)
    work = Path("/tmp/vhrfm_scaling")
    t0 = time.perf_counter()
    pretrain("calib", objective, {**cfg, "steps": 5, "warmup_steps": 1}, corpus, work / "c1", seed=seed, progress=False, resume=False)
    t1 = time.perf_counter()
    pretrain("calib", objective, {**cfg, "steps": 5 + calib_steps, "warmup_steps": 1}, corpus, work / "c2", seed=seed,
             progress=False, resume=False)
    t2 = time.perf_counter()
    s_per_step = max(((t2 - t1) - (t1 - t0)) / calib_steps, 1e-4)
    # the calibration's steps ran about 1.5x faster than a long run's (2026-12-04 on an H200: 0.051 s vs 0.079 s
    # per step, 515 s for a 330 s budget): plan on 1.6x the calibrated time, the budget shared by the variants
    steps = int(min(max_steps, budget_s / (1.6 * s_per_step * len(variants))))
    # one snapshot, after a third of the run, when one variant runs: the tool returns at most 64 MB and a ResNet-18
    # is 23 MB in fp16, so two encoders come back whole (on 2026-12-04 three were asked for and one lost a shard)
    snaps = [steps // 3] if len(variants) == 1 and 0 < steps // 3 < steps else []
    record.update({"seconds_per_step": round(s_per_step, 4), "steps": steps, "snapshots": snaps,
                   "images_per_s_loop": round(cfg["batch_size"] / s_per_step, 1)})
    print(json.dumps(record), flush=True)

    files, logs, record["runs"] = {}, {}, {}
    for v in variants:
        name = METHOD if v == "views" else f"{METHOD}_{v}"
        cfg_run = {**cfg, **VARIANTS[v], "steps": steps, "warmup_steps": min(cfg["warmup_steps"], max(1, steps // 10)),
                   "snapshots": snaps, "ckpt_every": 10**9, "log_every": max(1, steps // 200)}
        t0 = time.perf_counter()
        summary = pretrain(name, objective, cfg_run, corpus, work / v, seed=seed, progress=False, resume=False)
        record["runs"][v] = {"settings": cfg_run, "train_seconds": round(time.perf_counter() - t0, 1),
                             "final_loss": summary["final_loss"]}
        for k, path in [(steps, work / v / f"{name}.safetensors")] + [
                (k, work / v / SNAPSHOT_DIR / f"{snapshot_name(name, k)}.safetensors") for k in snaps]:
            enc = load_encoder(path)
            label = str(k) if variants == ("views",) else f"{v}_step{k}"
            files[label] = _save_shards(out / file_stem(label), enc, {**enc.card, "steps_done": k, "variant": v})
        log = work / v / f"{name}_log.csv"
        lines = log.read_text().splitlines() if log.exists() else []
        logs[v] = lines[::max(1, len(lines) // 40)]
        print(json.dumps({v: record["runs"][v]}), flush=True)
    record["files"] = files
    record["log"] = logs if len(variants) > 1 else logs[variants[0]]
    if bench:
        try:
            record["bench_pretrain"] = [bench_pretrain(corpus, {**cfg, **kw}, steps=20, warmup=5, seed=seed, objective=obj)
                                        for obj, kw in (("contrastive", {}),)]
        except Exception as e:  # the benchmark must not cost the trained weights
            record["bench_pretrain_error"] = repr(e)
    (out / "record.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "log"}), flush=True)


def bench(carry: Path, out: Path, seed: int = 0, steps: int = 30, warmup: int = 5, stub_all: bool = False,
          repeats: int = 3) -> None:
    """Issue 4's pretraining benchmark (our loop vs a bare loop, :func:`vhrfm.bench.bench_pretrain`) with the
    teacher's method at the gpu profile's settings, ``repeats`` times in one process (the spread is the point: on
    an H200 single runs ranged 0.57-0.63 with the views on the device, 0.31-0.52 before, at ff5370f)."""
    corpus, objective, cfg, header = _gpu_setup(carry, stub_all)
    from vhrfm.bench import bench_pretrain

    out.mkdir(parents=True, exist_ok=True)
    record = {**header, "batch_size": cfg["batch_size"], "crop": cfg["crop"], "runs": []}
    for _ in range(repeats):
        record["runs"].append(bench_pretrain(corpus, cfg, steps=steps, warmup=warmup, seed=seed, objective=objective))
        print(json.dumps(record["runs"][-1]), flush=True)
    ratios = [r["ratio_ours_vs_bare"] for r in record["runs"]]
    record["ratio_mean"] = round(sum(ratios) / len(ratios), 3)
    (out / "bench.json").write_text(json.dumps(record, indent=1))


def _load_shards(folder: Path, stem: str):
    import torch
    from safetensors import safe_open

    from vhrfm.models import create_encoder

    state, card, expected = {}, None, set()
    files = sorted(folder.glob(f"{stem}.*.safetensors"))
    for f in files:
        with safe_open(str(f), "pt") as fh:
            card = card or json.loads(fh.metadata()["card"])
            expected.add(int(fh.metadata()["shard"].split("/")[1]))
            for k in fh.keys():
                t = fh.get_tensor(k)
                state[k] = t.float() if t.is_floating_point() else t
    if not files or expected != {len(files)}:
        raise FileNotFoundError(f"{stem}: {len(files)} shard file(s) in {folder}, expected {sorted(expected) or 'at least 1'}")
    enc = create_encoder(card["arch"], **card.get("arch_kwargs", {}))
    missing, unexpected = enc.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{stem}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    enc.card = card
    return enc.eval()


def probe(weights: Path | list[Path], out: Path, seed: int = 0) -> None:
    """Chapter 1's probes of the encoders returned by one or several ``train`` runs (folders with ``record.json``),
    in one run beside the cpu teacher, random init, RCF and pixel statistics."""
    import torch

    from vhrfm.checkpoint import load_encoder
    from vhrfm.config import load_profile
    from vhrfm.ssl.evaluate import mean_over_tasks, probe_all, probe_tasks, random_encoder

    torch.manual_seed(seed)
    folders = [weights] if isinstance(weights, Path) else list(weights)
    records = [json.loads((w / "record.json").read_text()) for w in folders]
    p = load_profile("cpu")
    tasks, left_out = probe_tasks("cpu")
    encoders, not_back = {}, {}
    for w, record in zip(folders, records):
        for label in record["files"]:
            stem = file_stem(label)
            if f"gpu_{stem}" in encoders or f"gpu_{stem}" in not_back:
                raise ValueError(f"encoder {stem} is returned by more than one of the runs {[str(f) for f in folders]}")
            try:
                encoders[f"gpu_{stem}"] = _load_shards(w, stem)
            except FileNotFoundError as e:  # the tool returns at most 64 MB: a run can lose an encoder's shard
                not_back[f"gpu_{stem}"] = str(e).replace(str(w), "WEIGHTS")
    encoders["cpu_teacher"] = load_encoder("teacher")
    encoders["random_init"] = random_encoder(encoders["cpu_teacher"].card["arch"], seed)
    res = probe_all(encoders, tasks, seed=seed, n_boot=p["probe"]["n_boot"])
    methods = [*encoders, "rcf", "pixel_stats"]
    summary = {m: {"linear_acc": mean_over_tasks(res, m), "knn_acc": mean_over_tasks(res, m, "knn_acc")} for m in methods}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    trains = [{k: v for k, v in r.items() if k not in ("log",)} for r in records]
    logs = [r.get("log", []) for r in records]
    doc = {"what": __doc__.strip().splitlines()[0], "commit": commit, "device": records[0]["device"],
           "train": trains[0] if len(records) == 1 else trains, "loss_log": logs[0] if len(records) == 1 else logs,
           "encoders_not_returned": not_back, "tasks": list(tasks), "tasks_left_out": left_out,
           "summary": summary, "probe": res,
           "commands": ["python scripts/device_pretrain_scaling.py prepare --out .device_carry",
                        "python scripts/device_pretrain_scaling.py train --carry .device_carry --out $OUT (GPU machine)",
                        f"python scripts/device_pretrain_scaling.py probe {' '.join('--weights DIR' for _ in folders)} --out {out}"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    for m, v in summary.items():
        print(f"{m:24s} linear {v['linear_acc']:.3f}  knn {v['knn_acc']:.3f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare", help="write the cpu profile's pretraining corpus to OUT (corpus.npz, corpus.json)")
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("train", help="train on the GPU for --budget-s seconds; weights and record.json to OUT")
    b.add_argument("--carry", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--budget-s", type=float, default=300.0)
    b.add_argument("--max-steps", type=int, default=20000)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--calib-steps", type=int, default=40)
    b.add_argument("--batch-size", type=int, default=None, help="override the gpu profile's batch size (local checks)")
    b.add_argument("--variant", action="append", choices=list(VARIANTS), default=None,
                   help="views variant of the teacher's method (repeat for several; the budget is shared); default: views")
    b.add_argument("--no-bench", action="store_true", help="skip the pretraining benchmark")
    b.add_argument("--stub-all", action="store_true", help="stand in the geospatial packages even when installed (a check)")
    d = sub.add_parser("bench", help="the pretraining benchmark, repeated; bench.json to OUT")
    d.add_argument("--carry", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--steps", type=int, default=30)
    d.add_argument("--warmup", type=int, default=5)
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--stub-all", action="store_true", help="stand in the geospatial packages even when installed (a check)")
    c = sub.add_parser("probe", help="chapter-1 probes of the returned weights beside random init, RCF, pixel stats")
    c.add_argument("--weights", type=Path, action="append", required=True,
                   help="a folder returned by train (repeat to probe several runs in one table)")
    c.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(args.out)
    elif args.cmd == "train":
        train(args.carry, args.out, args.budget_s, args.max_steps, args.seed, args.stub_all, args.calib_steps,
              args.batch_size, tuple(args.variant or ("views",)), not args.no_bench)
    elif args.cmd == "bench":
        bench(args.carry, args.out, steps=args.steps, warmup=args.warmup, stub_all=args.stub_all,
              repeats=args.repeats)
    else:
        probe(args.weights, args.out)


if __name__ == "__main__":
    main()
