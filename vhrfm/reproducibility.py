"""Comparing two runs' metrics files: what moved, leaving wall-clock measurements out.

Used by the reproducibility test (a forced smoke repro against the committed smoke metrics) and by
``scripts/compare_metrics.py`` (every tracked ``metrics.json`` of the working tree against a commit's, e.g. after
re-running the pipeline on another machine, whose fingerprint :mod:`vhrfm.provenance` records).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

# Wall-clock measurements vary from run to run and machine to machine: they are not results to reproduce.
TIMING = re.compile(r"(seconds|_s$|_ms$|latency|per_s|throughput|mpx|rss|speedup|runtime|efficiency_raw|images_per_s|calls_per_timing|"
                    r"^timings?$|^wall)")
TOLERANCE = 1e-6  # the smoke profile is deterministic on one machine (seeded, single process): differences are bugs

# Structure that follows from values: the exported task models are each model at 100 % plus the selected best at its
# budget (one more when the best is at a smaller budget); another machine can flip that (seen: AVX-512 vs AVX2 smoke
# runs). The operating point at the precision target has the same keys whether or not validation reached it.
VALUE_SHAPED = re.compile(r"/task_models/models: length \d+ != \d+$")


def diff_metrics(a, b, tol: float = TOLERANCE, path: str = "") -> list[str]:
    """Where two metrics trees differ beyond ``tol`` (numbers) or at all (keys, strings), timing fields left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if TIMING.search(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'committed' if k not in a else 'new'}")
            else:
                out += diff_metrics(a[k], b[k], tol, f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff_metrics(x, y, tol, f"{path}[{i}]")]
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return [] if a == b else [f"{path}: {a!r} != {b!r}"]
    return [] if abs(a - b) <= tol else [f"{path}: {a} != {b} (tolerance {tol})"]


def structural(differences: list[str]) -> list[str]:
    """The differences that are about keys (present on one side only) or list lengths, not values, leaving out the
    structure that values decide (:data:`VALUE_SHAPED`)."""
    return [d for d in differences if (": only in " in d or ": length " in d) and not VALUE_SHAPED.search(d)]


def numeric_changes(old, new, path: str = "") -> list[tuple[str, float, float]]:
    """Every number (timings left out, as :func:`diff_metrics`) present in both trees at the same place that differs:
    (path, old, new), for ranking what moved most."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) & set(new), key=str) if not TIMING.search(str(k))
                for c in numeric_changes(old[k], new[k], f"{path}/{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (x, y) in enumerate(zip(old, new)) for c in numeric_changes(x, y, f"{path}[{i}]")]
    if (isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool)
            and not isinstance(new, bool) and old != new):
        return [(path, float(old), float(new))]
    return []


def compare_with_commit(root: Path, rev: str, tol: float = 0.0) -> dict:
    """Every ``metrics.json`` git tracks under ``root`` against the same file at ``rev``: per file, how many values
    differ beyond ``tol``, the structural differences, and the numbers that moved, largest absolute change first."""
    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    out = {}
    for f in git("ls-files", "*metrics.json").split():
        try:
            old = json.loads(git("show", f"{rev}:{f}"))
        except subprocess.CalledProcessError:
            out[f] = {"status": f"not in {rev}"}
            continue
        path = root / f
        if not path.exists():
            out[f] = {"status": "missing in the working tree"}
            continue
        new = json.loads(path.read_text())
        d = diff_metrics(new, old, tol)  # a: the working tree, b: the commit (the labels diff_metrics writes)
        moved = sorted(numeric_changes(old, new), key=lambda c: -abs(c[2] - c[1]))
        out[f] = {"status": "identical" if not d else "differs", "differences": len(d), "structural": structural(d),
                  "moved": [c for c in moved if abs(c[2] - c[1]) > tol]}
    return out


__all__ = ["TIMING", "TOLERANCE", "VALUE_SHAPED", "diff_metrics", "structural", "numeric_changes",
           "compare_with_commit"]
