"""What moved between a commit's metrics and the working tree's: every ``metrics.json`` git tracks, timings left
out (:mod:`vhrfm.reproducibility`). For checking a re-run of the pipeline against the committed results, on this
machine (every value should be identical) or on another one (``results/data/environment.json`` says which CPU ran
each; floating-point kernels differ between CPUs, so seeded runs differ there, and this says by how much).

    python scripts/compare_metrics.py HEAD                  # after dvc repro, before committing its outputs
    python scripts/compare_metrics.py HEAD~1 --top 20 --grep /best/ --grep /summary/

Prints per file: identical or the count of values that differ, the structural differences (keys or list lengths),
and the numbers that moved most (absolute change), optionally only those whose path contains a ``--grep`` string.
Exit status 1 where anything differs beyond ``--tol``, so it can gate a same-machine re-run.
"""

from __future__ import annotations

import argparse
import sys

from vhrfm.config import project_root
from vhrfm.reproducibility import compare_with_commit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("rev", help="the commit to compare with (e.g. HEAD)")
    ap.add_argument("--tol", type=float, default=0.0, help="absolute tolerance on numbers (default 0: bit for bit)")
    ap.add_argument("--top", type=int, default=5, help="how many of the largest moves to print per file")
    ap.add_argument("--grep", action="append", default=[], help="only moves whose path contains this (repeatable)")
    args = ap.parse_args(argv)
    out = compare_with_commit(project_root(), args.rev, args.tol)
    differs = 0
    for f, r in out.items():
        if r["status"] != "differs":
            print(f"{f}: {r['status']}")
            continue
        differs += 1
        print(f"{f}: {r['differences']} values differ" + (f"; structure: {r['structural'][:5]}" if r["structural"] else ""))
        moved = [m for m in r["moved"] if not args.grep or any(g in m[0] for g in args.grep)]
        for path, old, new in moved[:args.top]:
            print(f"  {path}: {old:.6g} -> {new:.6g} ({new - old:+.4g})")
    return 1 if differs else 0


if __name__ == "__main__":
    sys.exit(main())
