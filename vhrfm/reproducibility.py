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


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _walk(a, b, path: str = ""):
    """The one traversal of two metrics trees, timing keys left out, in a stable order: yields ``("only", path,
    in_a)`` for a key on one side only, ``("length", path, len_a, len_b)`` for lists of other lengths (not entered),
    and ``("leaf", path, x, y)`` for every other pair of values at the same place."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if TIMING.search(str(k)):
                continue
            if k not in a or k not in b:
                yield "only", f"{path}/{k}", k in a
            else:
                yield from _walk(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield "length", path, len(a), len(b)
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                yield from _walk(x, y, f"{path}[{i}]")
    else:
        yield "leaf", path, a, b


def diff_metrics(a, b, tol: float = TOLERANCE, path: str = "") -> list[str]:
    """Where two metrics trees differ beyond ``tol`` (numbers) or at all (keys, strings), timing fields left out."""
    out = []
    for kind, p, *v in _walk(a, b, path):
        if kind == "only":
            out.append(f"{p}: only in {'new' if v[0] else 'committed'}")
        elif kind == "length":
            out.append(f"{p}: length {v[0]} != {v[1]}")
        elif not (_is_number(v[0]) and _is_number(v[1])):
            if v[0] != v[1]:
                out.append(f"{p}: {v[0]!r} != {v[1]!r}")
        elif abs(v[0] - v[1]) > tol:
            out.append(f"{p}: {v[0]} != {v[1]} (tolerance {tol})")
    return out


def structural(differences: list[str]) -> list[str]:
    """The differences that are about keys (present on one side only) or list lengths, not values, leaving out the
    structure that values decide (:data:`VALUE_SHAPED`)."""
    return [d for d in differences if (": only in " in d or ": length " in d) and not VALUE_SHAPED.search(d)]


def numeric_changes(old, new, path: str = "") -> list[tuple[str, float, float]]:
    """Every number (timings left out, as :func:`diff_metrics`) present in both trees at the same place that differs:
    (path, old, new), for ranking what moved most."""
    return [(p, float(x), float(y)) for kind, p, *v in _walk(old, new, path) if kind == "leaf"
            for x, y in [v] if _is_number(x) and _is_number(y) and x != y]


def git(root: Path, *args: str) -> str:
    """``git ARGS`` in ``root``; its standard output (raises CalledProcessError where git fails)."""
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def checkout_commit(root: Path) -> str | None:
    """The checkout's commit (with ``+dirty`` where tracked files differ from it), or None outside a git checkout."""
    try:
        head = git(root, "rev-parse", "HEAD").strip()
        dirty = git(root, "status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def compare_with_commit(root: Path, rev: str, tol: float = 0.0) -> dict:
    """Every ``metrics.json`` git tracks under ``root`` against the same file at ``rev``: per file, how many values
    differ beyond ``tol``, the structural differences, and the numbers that moved, largest absolute change first."""
    out = {}
    for f in git(root, "ls-files", "*metrics.json").split():
        try:
            old = json.loads(git(root, "show", f"{rev}:{f}"))
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


__all__ = ["TIMING", "TOLERANCE", "VALUE_SHAPED", "diff_metrics", "structural", "numeric_changes", "git",
           "checkout_commit", "compare_with_commit"]
