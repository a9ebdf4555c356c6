"""Words for messages: class numbers as runs ("0–3, 5–9"), one form for the verdict sentence
and the scan table, a class with its name ("7 (sneaker)"), and counts with their noun ("1 sample", "2 samples").

Torch-free, so the command line can import it before any work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def class_label(c: int, class_names: Sequence[object]) -> str:
    """Class ``c`` with its name when that is not its number: ``7 (sneaker)``, ``3``. An image
    folder's classes are its sorted folder names, so the number alone does not say which."""
    name = str(class_names[c]) if 0 <= c < len(class_names) else str(c)
    return str(c) if name == str(c) else f"{c} ({name})"


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


def counted(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and its noun, singular for one: ``1 sample``, ``0 samples``, ``2 classes``.

    ``nouns`` is the plural when adding -s (-es after s, x, ch, sh) is wrong.
    """
    if n == 1:
        return f"{n} {noun}"
    if nouns is None:
        nouns = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {nouns}"
