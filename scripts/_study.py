"""What the training-study scripts share: their command line and the mean over seeds of each setting."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from vhrfm.config import project_root
from vhrfm.provenance import machine_fingerprint
from vhrfm.reproducibility import checkout_commit


def mean_over_seeds(rows: list[dict], setting: tuple[str, ...], means: tuple[str, ...]) -> list[dict]:
    """One entry per distinct ``setting`` (the runs' values of those keys, first seen first): the setting, its
    ``seeds`` and ``<key>_mean`` of each key of ``means`` over its runs."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in setting)].append(r)
    return [{**dict(zip(setting, key)), "seeds": [r["seed"] for r in rs],
             **{f"{k}_mean": float(np.mean([r[k] for r in rs])) for k in means}} for key, rs in groups.items()]


def runs_of(rows: list[dict], entry: dict, setting: tuple[str, ...]) -> list[dict]:
    """The runs of ``rows`` with ``entry``'s values of the ``setting`` keys (one entry of :func:`mean_over_seeds`)."""
    return [r for r in rows if all(r[k] == entry[k] for k in setting)]


def study_main(argv, doc: str, metavar: str, run: Callable[[list[str], str], list[dict]],
               summarise: Callable[[list[dict]], list[dict]]) -> None:
    """``--run SPEC`` (repeated), ``--profile``, ``--out``: run the specs, print a JSON line per setting's mean,
    and write runs and means to ``--out`` when given, with the machine (:func:`vhrfm.provenance.machine_fingerprint`:
    another CPU gives other numbers for the same seed) and the commit they ran at."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar=metavar)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", type=Path, help="also write the runs and their means here (JSON)")
    a = ap.parse_args(argv)
    rows = run(a.run, a.profile)
    summary = summarise(rows)
    for s in summary:
        print(json.dumps(s))
    if a.out:
        a.out.write_text(json.dumps({"profile": a.profile, "machine": machine_fingerprint(),
                                     "commit": checkout_commit(project_root()), "runs": rows, "means": summary},
                                    indent=1) + "\n")

