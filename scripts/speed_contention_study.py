"""Chapter 2's speed-up under load: does another busy process on the machine change a student's paired speed-up
over the teacher, and does the answer depend on how many threads the two models use?

Each ``--run STUDENT,THREADS,LOAD,N[,REWARM]`` times the teacher's network (the chapter's ``resnet18_anyband``)
against the student's (``STUDENT``, a registry name) exactly as the distillation stage does
(:func:`vhrfm.distill.efficiency.paired_speedups` on the chapter's efficiency band set, the profile's ``bench_size``
and :func:`vhrfm.distill.run.paired_timing`), in PyTorch and in ONNX Runtime, with
``THREADS`` intra-op threads for both (``0``: every core, the stage's two-core reading). ``LOAD`` is ``quiet``
(nothing else started) or ``busy`` (one other Python process spinning on a core for the whole timing). ``N`` seeds
the networks' random weights and the input: a forward pass's time does not depend on the weights' values, so the
study needs no trained model, and none of the pipeline's outputs. ``REWARM`` (default: the profile's
``speedup_rewarm_calls``) is the number of untimed calls of a network after the pause before each of its timed blocks
(:func:`vhrfm.distill.efficiency.paired_speedup`). Each run records what else used the CPUs during each timing
(:class:`vhrfm.distill.efficiency.machine_load`).

    python scripts/speed_contention_study.py --run tinyres16_anyband,0,quiet,0 --run tinyres16_anyband,0,busy,0 \\
        --run tinyres16_anyband,1,quiet,0 --run tinyres16_anyband,1,busy,0

Prints a JSON line per run, then the mean over repetitions of each setting; ``--out FILE`` writes them as JSON too,
with the machine and commit.

``results/studies/speed_contention.json`` (committed; not a pipeline output) was written on the cpu profile with
``--run tinyres16_anyband,T,L,N`` for T in 0 and 1, L in quiet and busy, N in 0 and 1 (in that order: N outermost,
then T, then L; about 5 minutes on two cores), with ``--out results/studies/speed_contention.json``, before
``REWARM`` existed (its runs are at 0 untimed calls). ``results/studies/speed_rewarm.json`` (committed; not a pipeline
output): ``--run tinyres16_anyband,T,quiet,N,R`` for N in 0, 1, 2, T in 0 and 1, R in 0 and 1 (N outermost, then T,
then R; about 7 minutes), with ``--out results/studies/speed_rewarm.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_study.py, however this file is loaded
from _study import mean_over_seeds, runs_of, study_main  # noqa: E402

LOADS = ("quiet", "busy")
SETTING = ("student", "threads", "load", "rewarm")
MEANS = ("speedup_torch", "speedup_onnx")
BUSY_LOOP = "while True: pass"


def parse_run(spec: str) -> dict:
    """``STUDENT,THREADS,LOAD,N[,REWARM]`` -> its fields (``rewarm`` None: the profile's)."""
    parts = spec.split(",")
    if (len(parts) not in (4, 5) or not parts[1].strip().isdigit() or parts[2] not in LOADS
            or not parts[3].strip().isdigit() or (len(parts) == 5 and not parts[4].strip().isdigit())):
        raise ValueError(f"--run {spec!r}: expected STUDENT,THREADS,LOAD,N[,REWARM] with THREADS a number (0: every "
                         f"core), LOAD one of {LOADS}, N a repetition number and REWARM a number of untimed calls")
    return {"student": parts[0], "threads": int(parts[1]), "load": parts[2], "seed": int(parts[3]),
            "rewarm": int(parts[4]) if len(parts) == 5 else None}


def run(specs: list[str], profile: str, teacher: str = "resnet18_anyband") -> list[dict]:
    import torch

    from vhrfm.config import load_profile
    from vhrfm.distill.efficiency import paired_speedups, speedup_key
    from vhrfm.distill.run import EFFICIENCY_BANDS, paired_timing
    from vhrfm.models import create_encoder, list_encoders
    from vhrfm.sensors import get_sensor

    runs = [parse_run(s) for s in specs]
    for name in {teacher, *(r["student"] for r in runs)}:
        if name not in list_encoders():
            raise ValueError(f"unknown encoder {name!r}: one of {list_encoders()}")
    d = load_profile(profile)["distill"]
    sensor = get_sensor(EFFICIENCY_BANDS["sensor"])
    wl, wd = sensor.wavelengths(EFFICIENCY_BANDS["bands"]), sensor.widths(EFFICIENCY_BANDS["bands"])
    timing = paired_timing(d)
    rows = []
    for r in runs:
        if r["rewarm"] is None:
            r["rewarm"] = timing["rewarm"]
        torch.manual_seed(r["seed"])
        nets = {"teacher": create_encoder(teacher).eval(), "student": create_encoder(r["student"]).eval()}
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if r["load"] == "busy" else None
        t0 = time.perf_counter()
        try:
            if busy:
                time.sleep(1.0)  # the busy process is running before the first timing
            out = paired_speedups(nets["teacher"], {"student": nets["student"]}, wl, wd, EFFICIENCY_BANDS["gsd"],
                                  size=d["bench_size"], seed=r["seed"], threads=r["threads"] or None,
                                  **{**timing, "rewarm": r["rewarm"]})["student"]
        finally:
            if busy:
                busy.kill()
                busy.wait()
        row = {**r, "teacher": teacher, "input_px": d["bench_size"], "rounds": timing["rounds"],
               "seconds": round(time.perf_counter() - t0, 1)}
        for rt in ("torch", "onnx"):
            got = out[speedup_key(rt, r["threads"] or None)]
            row[f"speedup_{rt}"], row[f"speedup_{rt}_iqr"] = got["median"], got["iqr"]
            row[f"threads_{rt}"], row[f"machine_{rt}"] = got["threads"], got["machine"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over repetitions of each setting's speed-ups, with the smallest and largest median of each, and the
    mean share of the CPUs that other processes used during the ONNX Runtime timings."""
    means = mean_over_seeds(rows, SETTING, MEANS)
    for s in means:
        same = runs_of(rows, s, SETTING)
        for k in MEANS:
            s[f"{k}_range"] = [min(r[k] for r in same), max(r[k] for r in same)]
        shares = [r["machine_onnx"]["other_cpu_share"] for r in same if r.get("machine_onnx")]
        s["other_cpu_share_onnx_mean"] = round(sum(shares) / len(shares), 3) if shares else None
    return means


def main(argv=None) -> None:
    study_main(argv, __doc__, "STUDENT,THREADS,LOAD,N[,REWARM]", run, summarise)


if __name__ == "__main__":
    main()
