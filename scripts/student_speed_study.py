"""Chapter 2's speed goal, measured again and under other readings: how stable is a student's speed-up over the
teacher between repetitions, and how much does it depend on how ONNX Runtime is timed?

Each ``--run STUDENT,N`` loads the chapter's teacher (``models/teacher.safetensors``) and the self-supervised KD
student (``models/distill/kd_<STUDENT>.safetensors``), fixes both to the chapter's efficiency band set
(:data:`vhrfm.distill.run.EFFICIENCY_BANDS`) and times them at batch one on a random input drawn with seed N, like
``run_distillation`` (the profile's ``bench_size``, rounds, ``speedup_min_block_ms``; :func:`paired_speedup`):

* ``torch``: both in eager PyTorch, each timed block after the profile's idle pause (``speedup_settle_ms``);
* ``onnx``: both in ONNX Runtime with its default session options, after the same pause (the chapter's reading);
* ``onnx_nospin``: both in ONNX Runtime with the worker threads' spinning turned off
  (``session.intra_op.allow_spinning = 0``), after the pause: what a shared machine might configure;
* ``onnx_nosettle``: the chapter's ONNX reading without the pause, as it was timed before the pause was added
  (the other session's threads may still spin while a block is timed).

    python scripts/student_speed_study.py --run tinyres16_anyband,0 --run tinyres16_anyband,1

Prints a JSON line per run, then the mean over repetitions of each student; ``--out FILE`` writes them as JSON too,
with the machine and commit. Needs the profile's ``distill`` and ``pretrain`` outputs of ``dvc repro``.

``results/studies/student_speed_repeats.json`` (committed; not a pipeline output) was written on the cpu profile by
``--run tinyres16_anyband,N`` for N in 0 to 14 and ``--run mobilenetv3_small_anyband,N`` for N in 0 to 4 (one
process, about 15 minutes), with ``--out results/studies/student_speed_repeats.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_study.py, however this file is loaded
from _study import mean_over_seeds, runs_of, study_main  # noqa: E402

READINGS = ("torch", "onnx", "onnx_nospin", "onnx_nosettle")
SETTING = ("student",)
MEANS = tuple(f"speedup_{r}" for r in READINGS)


def parse_run(spec: str) -> dict:
    """``STUDENT,N`` -> its fields (N: the repetition, also the input's seed)."""
    parts = spec.split(",")
    if len(parts) != 2 or not parts[1].strip().isdigit():
        raise ValueError(f"--run {spec!r}: expected STUDENT,N with N a repetition number")
    return {"student": parts[0], "seed": int(parts[1])}


def run(specs: list[str], profile: str) -> list[dict]:
    import torch

    from vhrfm.checkpoint import load_encoder
    from vhrfm.config import load_profile, models_dir
    from vhrfm.distill.efficiency import FixedBands, export_onnx, ort_session, paired_speedup
    from vhrfm.distill.run import EFFICIENCY_BANDS
    from vhrfm.sensors import get_sensor

    runs = [parse_run(s) for s in specs]
    d = load_profile(profile)["distill"]
    for r in runs:
        if not (models_dir(profile) / "distill" / f"kd_{r['student']}.safetensors").exists():
            raise ValueError(f"--run: no distilled student {r['student']!r} in {models_dir(profile) / 'distill'} "
                             f"(the profile's distill.students: {d['students']})")
    sensor = get_sensor(EFFICIENCY_BANDS["sensor"])
    wl, wd = sensor.wavelengths(EFFICIENCY_BANDS["bands"]), sensor.widths(EFFICIENCY_BANDS["bands"])
    gsd, size = EFFICIENCY_BANDS["gsd"], d["bench_size"]
    rounds = max(10, 3 * d["bench_repeats"])
    block, settle = d.get("speedup_min_block_ms", 0) / 1e3, d.get("speedup_settle_ms", 0) / 1e3
    teacher = FixedBands(load_encoder(models_dir(profile) / "teacher.safetensors"), wl, wd, gsd).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for r in runs:
            student = FixedBands(load_encoder(models_dir(profile) / "distill" / f"kd_{r['student']}.safetensors"),
                                 wl, wd, gsd).eval()
            torch.manual_seed(r["seed"])
            x1 = torch.randn(1, len(wl), size, size)
            feed = {"image": x1.numpy()}
            files = {"teacher": export_onnx(teacher, x1, Path(tmp) / "teacher.onnx"),
                     "student": export_onnx(student, x1, Path(tmp) / "student.onnx")}
            t0 = time.perf_counter()
            out = {"torch": paired_speedup(lambda: teacher(x1), lambda: student(x1), rounds, min_block_s=block,
                                           settle_s=settle)}
            for name, spin, pause in (("onnx", True, settle), ("onnx_nospin", False, settle), ("onnx_nosettle", True, 0.0)):
                ts, ss = ort_session(files["teacher"], spin=spin), ort_session(files["student"], spin=spin)
                out[name] = paired_speedup(lambda: ts.run(None, feed), lambda: ss.run(None, feed), rounds,
                                           min_block_s=block, settle_s=pause)
                del ts, ss
            row = {**r, "input_px": size, "rounds": rounds, "seconds": round(time.perf_counter() - t0, 1)}
            for name in READINGS:
                row[f"speedup_{name}"], row[f"speedup_{name}_iqr"] = out[name]["median"], out[name]["iqr"]
                row[f"settle_ms_{name}"] = out[name]["settle_ms"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over repetitions of each student's speed-ups, with the smallest and largest median of each reading."""
    means = mean_over_seeds(rows, SETTING, MEANS)
    for s in means:
        same = runs_of(rows, s, SETTING)
        for k in MEANS:
            s[f"{k}_range"] = [min(r[k] for r in same), max(r[k] for r in same)]
    return means


def main(argv=None) -> None:
    study_main(argv, __doc__, "STUDENT,N", run, summarise)


if __name__ == "__main__":
    main()
