"""The machine a profile's results were computed on: what decides whether two runs can agree bit for bit.

Seeded single-process runs are deterministic on one machine, but floating-point kernels (oneDNN / OpenBLAS /
MKL) pick code paths by CPU instruction set and thread count, so the same seed can give slightly different
numbers on another CPU, and a threshold or an argmax downstream can then flip. The ``prepare`` stage writes this
fingerprint beside the split table; the reproducibility test compares metrics bit for bit only when the
fingerprint of the committed results matches the machine running the test.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

SIMD_PREFIXES = ("sse4", "avx", "fma", "f16c", "amx", "vnni", "bf16")


def _cpuinfo() -> tuple[str, list[str]]:
    """The CPU's model name and feature flags: from /proc/cpuinfo where there is one (Linux), else what
    ``platform.processor()`` says, unless that is only the architecture (``uname -p`` prints ``x86_64`` on some
    Linux distributions and ``unknown`` on others)."""
    model, flags = "", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = value.split()
    except OSError:
        pass
    if not model:
        proc = platform.processor() or ""
        model = "" if proc in (platform.machine(), "unknown") else proc
    return model, flags


def machine_fingerprint() -> dict:
    """CPU model, its SIMD instruction sets, torch's thread count and the numeric libraries' versions."""
    import numpy
    import torch

    model, flags = _cpuinfo()
    return {"machine": platform.machine(), "cpu": model,
            "simd": sorted({f for f in flags if f.startswith(SIMD_PREFIXES)}),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__}


def write_fingerprint(path: str | Path) -> dict:
    fp = machine_fingerprint()
    Path(path).write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
    return fp
