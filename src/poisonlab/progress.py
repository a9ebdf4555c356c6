"""Progress bars through one switch: on for interactive CLI use, silent in the library and tests."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_enabled = False


def enable(flag: bool = True) -> None:
    """Turn progress display on or off (the CLI calls this; it stays off when stderr is not a TTY)."""
    global _enabled
    _enabled = bool(flag)


def is_enabled() -> bool:
    """True when bars should be drawn: enabled by the CLI and stderr is a terminal."""
    return _enabled and sys.stderr.isatty()


def _make_progress():  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items``, drawing a bar when progress is enabled."""
    if not is_enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with _make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)


class Bar:
    """A manually advanced bar; does nothing when progress is disabled."""

    def __init__(self, progress, task) -> None:  # type: ignore[no-untyped-def]
        self._progress = progress
        self._task = task

    def advance(self, steps: float = 1, info: str | None = None) -> None:
        """Move the bar forward and optionally replace its trailing text."""
        if self._progress is None:
            return
        if info is None:
            self._progress.advance(self._task, steps)
        else:
            self._progress.update(self._task, advance=steps, info=info)


@contextmanager
def bar(description: str, total: float | None) -> Iterator[Bar]:
    """Context manager yielding a :class:`Bar`; silent unless progress is enabled."""
    if not is_enabled():
        yield Bar(None, None)
        return
    with _make_progress() as progress:
        yield Bar(progress, progress.add_task(description, total=total, info=""))
