"""The ``pretrain`` stage: build the corpus once, train every method of the profile, write weights + cards."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vhrfm.config import load_profile, models_dir, results_dir
from vhrfm.data.datasets import load_splits
from vhrfm.data.normalize import load_stats
from vhrfm.data.sources import SOURCES
from vhrfm.ssl.corpus import build_corpus
from vhrfm.ssl.train import pretrain


def method_config(profile: str, method: str) -> tuple[str, dict]:
    cfg = load_profile(profile)["pretrain"]
    spec = cfg["methods"][method]
    base = {k: v for k, v in cfg.items() if k not in ("methods", "corpus")}
    merged = {**base, **{k: v for k, v in spec.items() if k != "objective"}}
    return spec["objective"], merged


def corpus_for(profile: str, progress: bool = True):
    p = load_profile(profile)
    c = p["pretrain"]["corpus"]
    res = results_dir(profile) / "data"
    splits, stats = load_splits(res / "splits.csv"), load_stats(res / "norm_stats.json")
    corpus = build_corpus(splits, stats, crop=c["crop_store"], crops_per_tile=c["crops_per_tile"],
                          max_tiles_per_product=c["max_tiles_per_product"], seed=p["seed"], progress=progress)
    return corpus, stats


def run_pretraining(profile: str, methods: list[str] | None = None, out_dir: str | Path | None = None,
                    progress: bool = True) -> dict:
    p = load_profile(profile)
    out = Path(out_dir) if out_dir else models_dir(profile) / "ssl"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus, stats = corpus_for(profile, progress)
    used = {pc.key for pc in corpus.products}
    extra = {
        "normalisation": {k: {f: stats[k][f] for f in ("sensor", "bands", "wavelengths", "mean", "std")} for k in sorted(used)},
        "training_data": [{"source": s.id, "sensor": s.sensor, "licence": s.licence, "attribution": s.attribution,
                           "non_commercial": s.non_commercial} for s in SOURCES.values() if any(k.startswith(s.id + "/") for k in used)],
        "splits_used": "train and val tiles of every source (no test tile)",
        "command": f"vhrfm pretrain --profile {profile}",
    }
    summaries = {}
    for name in methods or list(p["pretrain"]["methods"]):
        objective, cfg = method_config(profile, name)
        summaries[name] = pretrain(name, objective, cfg, corpus, out, seed=p["seed"], card_extra=extra, progress=progress)
    summary = {"profile": profile, "corpus_crops": corpus.n_crops, "products": len(corpus.products),
               "seconds": round(time.perf_counter() - t0, 1), "methods": summaries}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
