"""Progress through one switch: on for CLI use, silent in the library and tests.

When the CLI switches progress on, a terminal gets live bars; a log file, a pipe or CI (stderr
not a terminal) gets plain lines instead: one line when a stage ends (done, or stopped early by
its caller, as early stopping ends training), with its count and elapsed time, and one every
:data:`LINE_SECONDS` while a long stage runs, so redirected output never sits silent for minutes.

Every bar draws on one shared stderr console, so a stage that runs inside another (training
inside "running defenses") is stacked under it instead of overwriting it. A step that repeats a
small stage many times (LRP heatmaps class by class) reports one stage of its own across the
repetitions and runs them inside :func:`muted`, so a log gets one line, not one per class.

A stage that runs in a child process (the LGM model a scan trains beside its other work,
:mod:`poisonlab.train.background`) cannot draw on this process's screen: the child calls
:func:`report_to` and its stages write their state to a file, which the parent reads
(:func:`read_report`) and shows as a stage of its own, like any training here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_enabled = False
_muted = 0
_console = None
_report: Path | None = None

LINE_SECONDS = 30.0
"""Without a terminal: at most one progress line this often per running stage (and one at its end)."""
REPORT_SECONDS = 0.5
"""In a child process (:func:`report_to`): at most one state write this often per stage."""


def enable(flag: bool = True) -> None:
    """Turn progress display on or off (the CLI calls this unless --quiet)."""
    global _enabled
    _enabled = bool(flag)


def is_enabled() -> bool:
    """True when bars should be drawn: enabled by the CLI, not muted, stderr a terminal."""
    return _enabled and not _muted and _report is None and sys.stderr.isatty()


def lines_enabled() -> bool:
    """True when stages are reported without a bar: progress enabled and not muted but stderr
    not a terminal (plain lines), or a child process reporting to a file (:func:`report_to`)."""
    if _muted:
        return False
    return _report is not None or (_enabled and not sys.stderr.isatty())


def report_to(path: str | Path | None) -> None:
    """In a child process: every stage writes its state to ``path`` instead of the screen.

    The state is JSON, ``{"description", "done", "total", "info"}``, replaced atomically at most
    every :data:`REPORT_SECONDS` and at the stage's end; the parent shows it with
    :func:`read_report` (the child's stderr is a log file nobody watches). None turns it off.
    """
    global _report
    _report = Path(path) if path is not None else None


def read_report(path: str | Path) -> dict[str, Any] | None:
    """The last state a child wrote with :func:`report_to` (None before its first write)."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


@contextmanager
def muted() -> Iterator[None]:
    """Stages started inside draw no bar and write no line.

    For a caller that reports one stage across many small ones (e.g. one "LRP heatmaps" stage
    over the classes instead of one per class); stages already running are not affected.
    """
    global _muted
    _muted += 1
    try:
        yield
    finally:
        _muted -= 1


def elapsed(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s`` or ``1 h 02 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Lines:
    """A stage reported as plain lines on stderr, or in a child process as its state in the
    :func:`report_to` file (see the module docstring)."""

    def __init__(self, description: str, total: float | None, started: float | None = None) -> None:
        self.description = description
        self.total = total
        self.done = 0.0
        self.info = ""
        self.started = time.monotonic() if started is None else started
        self.last = time.monotonic()
        self.report = _report  # a child's stages write their state there instead

    def advance(self, steps: float = 1, info: str | None = None) -> None:
        self.done += steps
        if info is not None:
            self.info = info
        now = time.monotonic()
        if now - self.last >= (LINE_SECONDS if self.report is None else REPORT_SECONDS):
            self.last = now
            self._write(f"{elapsed(now - self.started)} so far")

    def finish(self) -> None:
        self._write(f"done in {elapsed(time.monotonic() - self.started)}")

    def stop(self) -> None:
        """The stage's consumer stopped it before its end (early stopping closes the epochs)."""
        if self.total and self.done >= self.total:  # closed after its last step: it is done
            self.finish()
            return
        self._write(f"stopped after {elapsed(time.monotonic() - self.started)}")

    def _write(self, when: str) -> None:
        if self.report is not None:
            state = {"description": self.description, "done": self.done, "total": self.total}
            part = self.report.with_name(self.report.name + ".part")
            part.write_text(json.dumps({**state, "info": self.info}), encoding="utf-8")
            os.replace(part, self.report)  # a reader never sees half a file
            return
        count = f"{self.done:g}" + (f"/{self.total:g}" if self.total else "")
        info = f", {self.info}" if self.info else ""
        sys.stderr.write(f"{self.description}: {count}{info}, {when}\n")
        sys.stderr.flush()


def _shared_console():  # type: ignore[no-untyped-def]
    """The one stderr console every bar draws on (created on first use, rich loads lazily)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def _make_progress():  # type: ignore[no-untyped-def]
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
        console=_shared_console(),
        transient=True,
    )


def track(
    items: Iterable[T],
    description: str,
    total: int | None = None,
    label: Callable[[T], str] | None = None,
) -> Iterator[T]:
    """Iterate over ``items``, drawing a bar (or writing lines) when progress is enabled.

    ``label`` names the item being worked on beside the bar (e.g. the defense that runs), and in
    the lines a long stage writes while it runs; the stage's last line has no label.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not is_enabled():
        if lines_enabled():
            stage = _Lines(description, total)
            for item in items:
                if label is not None:
                    stage.advance(0, label(item))
                try:
                    yield item
                except GeneratorExit:  # the loop over the stage ended early (a break)
                    stage.stop()
                    raise
                stage.advance(1)
            stage.info = ""
            stage.finish()
        else:
            yield from items
        return
    with _make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            if label is not None:
                progress.update(task, info=label(item))
            yield item
            progress.advance(task)


class Bar:
    """A manually advanced bar (or stage of lines); does nothing when progress is disabled."""

    def __init__(self, progress, task, lines: _Lines | None = None) -> None:  # type: ignore[no-untyped-def]
        self._progress = progress
        self._task = task
        self._lines = lines

    def advance(self, steps: float = 1, info: str | None = None) -> None:
        """Move the bar forward and optionally replace its trailing text."""
        if self._lines is not None:
            self._lines.advance(steps, info)
        if self._progress is None:
            return
        if info is None:
            self._progress.advance(self._task, steps)
        else:
            self._progress.update(self._task, advance=steps, info=info)

    def show(self, done: float, total: float | None, info: str) -> None:
        """Set the bar's count, total and text (a stage mirrored from a child's report)."""
        if self._lines is not None:
            self._lines.total = total
            self._lines.advance(done - self._lines.done, info)
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, info=info)


@contextmanager
def bar(description: str, total: float | None, *, started: float | None = None) -> Iterator[Bar]:
    """Context manager yielding a :class:`Bar`; silent unless progress is enabled.

    ``started`` (a :func:`time.monotonic` time) backdates a stage's lines, for a stage that
    began before this call (a child's training, shown when the parent waits for it).
    """
    if not is_enabled():
        stage = _Lines(description, total, started) if lines_enabled() else None
        try:
            yield Bar(None, None, stage)
        except GeneratorExit:  # a generator holding the stage was closed (training stopped early)
            if stage is not None:
                stage.stop()
            raise
        if stage is not None:
            stage.finish()
        return
    with _make_progress() as progress:
        yield Bar(progress, progress.add_task(description, total=total, info=""))
