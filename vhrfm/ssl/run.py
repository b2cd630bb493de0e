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
from vhrfm.ssl.train import SNAPSHOT_DIR, pretrain, snapshot_name


def method_config(profile: str, method: str) -> tuple[str, dict]:
    cfg = load_profile(profile)["pretrain"]
    spec = cfg["methods"][method]
    base = {k: v for k, v in cfg.items() if k not in ("methods", "corpus", "seed_study")}
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


def seed_study_spec(p: dict) -> dict | None:
    """A profile's ``pretrain.seed_study`` ({method, seeds}), checked; None when the profile has none."""
    study = p["pretrain"].get("seed_study")
    if not study:
        return None
    if study.get("method") not in p["pretrain"]["methods"]:
        raise KeyError(f"pretrain.seed_study.method {study.get('method')!r} is not one of the profile's methods "
                       f"({', '.join(p['pretrain']['methods'])})")
    seeds = [int(s) for s in study.get("seeds") or []]
    if not seeds or p["seed"] in seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"pretrain.seed_study.seeds must be distinct extra seeds, without the main seed {p['seed']}: "
                         f"got {study.get('seeds')}")
    return {"method": study["method"], "seeds": seeds}


SEED_STUDY_DIR = "seeds"  # the seed study's replicas, under the pretraining folder


def seed_replica_name(method: str, seed: int) -> str:
    """The name (file stem under :data:`SEED_STUDY_DIR`, summary key) of ``method`` trained again at ``seed``."""
    return f"{method}_seed{seed}"


def seed_study_paths(profile: str, ssl_dir: str | Path | None = None) -> dict[int, Path]:
    """{pretraining seed: weights} of the profile's seed study (``pretrain.seed_study``): the study's method
    trained again at each extra seed (the profile's own seed is the main run, ``<method>.safetensors``)."""
    p = load_profile(profile)
    study = seed_study_spec(p)
    if study is None:
        return {}
    d = Path(ssl_dir) if ssl_dir else models_dir(profile) / "ssl"
    m = study["method"]
    return {p["seed"]: d / f"{m}.safetensors", **{s: d / SEED_STUDY_DIR / f"{seed_replica_name(m, s)}.safetensors" for s in study["seeds"]}}


def snapshot_paths(profile: str, ssl_dir: str | Path | None = None) -> dict[int, dict[int, Path]]:
    """{training seed: {step: path}} of the seed study's method's encoder snapshots (its ``snapshots`` setting), at
    the main seed and every seed of the study (beside each seed's weights, :func:`seed_study_paths`); {} when the
    profile has no seed study or the method no snapshots."""
    p = load_profile(profile)
    study = seed_study_spec(p)
    if study is None:
        return {}
    _, cfg = method_config(profile, study["method"])
    steps = sorted({int(k) for k in cfg.get("snapshots") or []})
    if not steps:
        return {}
    return {s: {k: w.parent / SNAPSHOT_DIR / f"{snapshot_name(w.stem, k)}.safetensors" for k in steps}
            for s, w in seed_study_paths(profile, ssl_dir).items()}


def run_pretraining(profile: str, methods: list[str] | None = None, out_dir: str | Path | None = None,
                    progress: bool = True) -> dict:
    p = load_profile(profile)
    study = seed_study_spec(p)  # a bad seed study fails before hours of training, not after
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
    if study and (methods is None or study["method"] in methods):
        # the same method, corpus and settings; only the training seed (init, batches, views) changes
        objective, cfg = method_config(profile, study["method"])
        for s in study["seeds"]:
            name = seed_replica_name(study["method"], s)
            summaries[name] = pretrain(name, objective, cfg, corpus, out / SEED_STUDY_DIR, seed=s, card_extra=extra,
                                       progress=progress)
    summary = {"profile": profile, "corpus_crops": corpus.n_crops, "products": len(corpus.products),
               "seconds": round(time.perf_counter() - t0, 1), "methods": summaries}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
