"""Helpers shared by the benchmarks: machine description, run record, Markdown result files.

Every result file starts with the command, the machine, and the run record of the benchmark that
wrote it: wall and CPU seconds (this process and its finished children), the thread settings in
effect, and the load average at the start and at the end. ``python -m bench`` starts a fresh
record before each benchmark (:func:`start_run`); a benchmark run on its own starts one when
this module is imported.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from poisonlab import runtime

RESULTS = Path(__file__).parent / "results"


_neighbour_cpu = 0.0  # CPU seconds of busy neighbours, not part of any benchmark's work


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its exited children, neighbours excluded."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return total - _neighbour_cpu


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@dataclass
class RunRecord:
    """Wall clock, CPU clock and load average of one benchmark run, from its start."""

    wall_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=_cpu_seconds)
    load_start: float = field(default_factory=load_average)

    def summary(self) -> str:
        """One Markdown line: wall and CPU seconds so far, loads, thread settings."""
        wall = time.perf_counter() - self.wall_start
        cpu = _cpu_seconds() - self.cpu_start
        return (
            f"Run: {wall:.0f} s wall, {cpu:.0f} s CPU (this process and its finished children), "
            f"load average {self.load_start:.2f} at the start and {load_average():.2f} at the end; "
            f"threads: {runtime.describe()}"
        )


_run = RunRecord()


def start_run() -> RunRecord:
    """Start a new run record (``python -m bench`` calls this before each benchmark)."""
    global _run
    _run = RunRecord()
    return _run


def current_run() -> RunRecord:
    """The run record the next result file will carry."""
    return _run


def machine() -> str:
    """One line describing where the numbers were taken."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}"
    )


def write_result(name: str, title: str, command: str, body: str) -> Path:
    """Write bench/results/NAME.md with a header (command, date, machine, run record) and ``body``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    header = (
        f"# {title}\n\n"
        f"Command: `{command}`  \n"
        f"Measured: {time.strftime('%Y-%m-%d %H:%M')} on {machine()}  \n"
        f"{_run.summary()}\n\n"
    )
    path.write_text(header + body.rstrip() + "\n")
    return path


def mean_sd(values: list[float], digits: int = 2) -> str:
    """``mean ± sd`` of ``values`` at ``digits`` decimals (the mean alone for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def busy_neighbour(count: int | bool = 1) -> Iterator[None]:
    """``count`` CPU-bound processes (busy Python loops, one core each) for the block's duration.

    They stand for whatever else runs on a shared machine: a browser, a CI neighbour, another
    user's job. Stopped (and waited for) when the block exits, even on error; their CPU time is
    kept out of the run record.
    """
    global _neighbour_cpu
    loops = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(int(count))
    ]
    try:
        if loops:
            time.sleep(0.5)  # let them get going
        yield
    finally:
        for loop in loops:
            loop.kill()
            _, _, usage = os.wait4(loop.pid, 0)  # reap it ourselves to learn its CPU time
            loop.returncode = -9
            _neighbour_cpu += usage.ru_utime + usage.ru_stime
