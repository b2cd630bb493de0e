"""How a measured time (and a rate or ratio made of times) is recorded: to significant digits, not decimals, so
that a stage of a fraction of a millisecond keeps its value where a fixed number of decimals would round it to 0."""

from __future__ import annotations


def significant(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (tiny timings keep their precision)."""
    return float(f"{x:.{digits}g}")


__all__ = ["significant"]
