"""Chapter 1 study: the teacher's method pretrained with its any-band stem frozen at the random initialisation.

Chapter 1's probes per level (``levels`` in ``results/pretraining/metrics.json``) found that a random ResNet-18's stem
statistics alone (stride 2) carry the best single-level accuracy on the probe tasks, and that contrastive
pretraining lowers them while it improves the final feature map. MoCo v3 (Chen, Xie and He, "An Empirical Study of
Training Self-Supervised Vision Transformers", ICCV 2021) freezes the ViT's patch projection at its random
initialisation for stability; here the same is done to the convolutional any-band stem (the spectral kernel
generator, in the online and the momentum encoder; the stem's batch norm still trains), so pretraining can only
change what lies above it. The stem stays any-band: it is still a function of each band's wavelength.

Each ``--run FREEZE,SEED`` pretrains the profile's seed-study method (``pretrain.seed_study.method``, its settings
and steps) at SEED on the pipeline's corpus, with its ``freeze`` option set by FREEZE (``stem`` or ``none``), and
probes it as chapter 1 does (the profile's tasks, feature set and C chosen on validation, the main seed's probe).
Since 2026-12-05 the pipeline itself has the method ``contrastive_resnet18_frozenstem`` (``freeze: [stem]``) and the
seed study follows it: ``stem`` then reproduces the pipeline's encoder at that seed bit for bit, and ``none`` is
``contrastive_resnet18``'s training (bit for bit at the main seed). In the same run it probes the random-init encoder
of that seed and the pipeline's trained encoder of that seed (``models/<profile>/ssl``, the seed study's weights), so
the comparison does not lean on numbers from another run. Means are over the tasks; ``*_val`` columns are validation,
the others test.

    python scripts/frozen_stem_study.py --run stem,0 --run stem,1 --run stem,2

Prints a JSON line per run, then the mean over seeds of each FREEZE; ``--out FILE`` writes them as JSON with the
machine and commit. Needs the profile's ``dvc repro`` outputs (splits, statistics, the pretrained encoders).

``results/studies/frozen_stem.json`` (committed; not a pipeline output) was written on the cpu profile by
``--run stem,N`` for N in 0, 1, 2 with ``--out results/studies/frozen_stem.json`` (about 5 minutes per run on two
cores) at 95764ff, when the seed study's method was ``contrastive_resnet18``: its ``pipeline_*`` columns are that
unfrozen method's encoders.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_study.py, however this file is loaded
from _study import mean_over_seeds, study_main  # noqa: E402

FREEZE = ("none", "stem")
SETTING = ("freeze",)
READINGS = ("study", "random_init", "pipeline")  # the study's encoder, its random init, the pipeline's at that seed
MEANS = tuple(f"{r}_{k}" for r in READINGS for k in ("linear_acc", "linear_val_acc", "pooled_acc"))


def parse_run(spec: str) -> dict:
    """``FREEZE,SEED`` -> its fields."""
    parts = spec.split(",")
    if len(parts) != 2 or parts[0] not in FREEZE or not parts[1].lstrip("-").isdigit():
        raise ValueError(f"--run {spec!r}: expected FREEZE,SEED with FREEZE in {FREEZE}")
    return {"freeze": parts[0], "seed": int(parts[1])}


def _reading(results: dict) -> dict:
    from vhrfm.ssl.evaluate import pooled_acc

    return {"linear_acc": float(np.mean([r["linear_acc"] for r in results.values()])),
            "linear_val_acc": float(np.mean([r["linear_val_acc"] for r in results.values()])),
            "pooled_acc": float(np.mean([pooled_acc(r) for r in results.values()])),
            "per_task": {t: {"linear_acc": r["linear_acc"], "linear_val_acc": r["linear_val_acc"],
                             "pooled_acc": pooled_acc(r), "features": r["features"]} for t, r in results.items()}}


def train_one(profile: str, freeze: str, seed: int, out_dir: Path, corpus=None) -> dict:
    """Pretrain the seed-study method at ``seed`` with ``freeze`` applied; returns pretrain's summary (with the number
    of frozen parameters)."""
    import vhrfm.ssl.train as train
    from vhrfm.config import load_profile
    from vhrfm.ssl.run import corpus_for, method_config, seed_study_spec

    study = seed_study_spec(load_profile(profile))
    if study is None:
        raise ValueError(f"profile {profile!r} has no pretrain.seed_study: no method to study")
    objective, cfg = method_config(profile, study["method"])
    cfg = {**cfg, "snapshots": [], "freeze": ["stem"] if freeze == "stem" else []}
    corpus = corpus if corpus is not None else corpus_for(profile, progress=False)[0]
    summary = train.pretrain("study", objective, cfg, corpus, out_dir, seed=seed, progress=False, resume=False)
    frozen = train.freeze_parts(train.build_objective(objective, cfg), cfg["freeze"])  # how many were frozen
    return {**summary, "method": study["method"], "frozen_params": frozen}


def run(specs: list[str], profile: str) -> list[dict]:
    from vhrfm.checkpoint import load_encoder
    from vhrfm.ssl.evaluate import probe_encoder, probe_levels, probe_tasks, random_encoder
    from vhrfm.ssl.run import corpus_for, seed_study_paths

    runs = [parse_run(s) for s in specs]
    pipeline = seed_study_paths(profile)
    for r in runs:
        if r["seed"] not in pipeline:
            raise ValueError(f"--run: seed {r['seed']} is not one of the profile's seed study ({sorted(pipeline)}): "
                             "no pipeline encoder to compare with in the same run")
        if not pipeline[r["seed"]].exists():
            raise ValueError(f"--run: {pipeline[r['seed']]} not found (run `dvc repro pretrain@{profile}` first)")
    tasks, _ = probe_tasks(profile)
    corpus = corpus_for(profile, progress=False)[0]
    rows = []
    for r in runs:
        with tempfile.TemporaryDirectory() as d:
            summary = train_one(profile, r["freeze"], r["seed"], Path(d), corpus)
            enc = load_encoder(Path(d) / "study.safetensors")
        arch = enc.card["arch"]
        encoders = {"study": enc, "random_init": random_encoder(arch, r["seed"]), "pipeline": load_encoder(pipeline[r["seed"]])}
        got = {k: _reading({t: probe_encoder(e, task, seed=0, n_boot=10) for t, task in tasks.items()})
               for k, e in encoders.items()}
        levels = probe_levels({"study": enc, "random_init": encoders["random_init"]}, tasks, n_boot=10, progress=False)
        row = {**r, "method": summary["method"], "arch": arch, "steps": summary["steps"],
               "frozen_params": summary["frozen_params"], "param_digest": summary["param_digest"],
               "levels_stride": levels["stride"]["study"], "levels_mean": levels["mean"]}
        for k, g in got.items():
            row.update({f"{k}_{m}": g[m] for m in ("linear_acc", "linear_val_acc", "pooled_acc")})
            row[f"{k}_per_task"] = g["per_task"]
        rows.append(row)
        print({k: round(v, 4) for k, v in row.items() if isinstance(v, float)}, flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    return mean_over_seeds(rows, SETTING, MEANS)


def main(argv=None) -> None:
    study_main(argv, __doc__, "FREEZE,SEED", run, summarise)


if __name__ == "__main__":
    main(sys.argv[1:])
