"""The one exception type the package raises on bad input.

Every check at a boundary (file, sensor, band count, CRS, nodata) raises
:class:`VHRFMInputError` with what was expected and what was found, so a caller
can catch a single type and a user reads one clear sentence.
"""

from __future__ import annotations


class VHRFMInputError(ValueError):
    """Bad input: names the problem, what was expected and what was found."""

    def __init__(self, problem: str, *, expected: object = None, found: object = None, path: object = None):
        self.problem = problem
        self.expected = expected
        self.found = found
        self.path = path
        parts = [problem]
        if path is not None:
            parts.append(f"file: {path}")
        if expected is not None:
            parts.append(f"expected: {expected}")
        if found is not None:
            parts.append(f"found: {found}")
        super().__init__("; ".join(parts))
