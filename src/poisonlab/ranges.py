"""Class numbers as runs ("0–3, 5–9"): one form for the verdict sentence and the scan table.

Torch-free, so the command line can import it before any work.
"""

from __future__ import annotations

from collections.abc import Iterable


def class_ranges(classes: Iterable[int]) -> str:
    """Classes as runs, in order: [0, 1, 2, 3, 5] → ``0–3, 5``; ``none`` when there are none."""
    values = sorted(classes)
    if not values:
        return "none"
    runs: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(str(start) if start == prev else f"{start}–{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(runs)
