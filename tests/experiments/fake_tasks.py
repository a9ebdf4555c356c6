"""Tiny tasks for the runner tests: they sleep, record each execution, fail or die on demand.

They live in an importable module (not conftest) because worker processes and Ray tasks import the
task's module by name before running a cell. Names start with ``test-`` so they never collide with
the real task kinds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from poisonlab.experiments.tasks_base import CellSpec, TaskContext, register_task


def record(path: str | None, line: str) -> None:
    """Append one line to the execution record (a single small write: safe across processes)."""
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def starts(path: Path) -> list[str]:
    """Cell keys of every recorded start, in order."""
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith("start")]


@register_task("test-sleep")
def sleep_task(cell: CellSpec, context: TaskContext) -> dict[str, Any]:
    """Record a start, sleep ``[task] sleep`` seconds, then succeed or fail as asked.

    ``[task]`` options: ``x`` (metric ``value`` = 2x), ``sleep``, ``record`` (execution log path),
    ``fail`` (raise ValueError), ``fail_flag`` (raise while this file exists), ``mode`` = ``die``
    (kill the process) or ``bad-metric`` (return a string metric).
    """
    task = cell.section("task")
    record(task.get("record"), f"start {cell.key} {os.getpid()}")
    (context.cell_dir / "artifact.txt").write_text(cell.key)
    context.log("sleeping")
    time.sleep(float(task.get("sleep", 0.0)))
    if task.get("fail") or (task.get("fail_flag") and Path(task["fail_flag"]).exists()):
        raise ValueError(f"asked to fail (x={task.get('x')})")
    if task.get("mode") == "die":
        os._exit(3)
    if task.get("mode") == "bad-metric":
        return {"value": "not a number"}
    record(task.get("record"), f"end {cell.key} {os.getpid()}")
    return {"value": 2 * float(task.get("x", 0)), "seed": cell.seed, "pid": os.getpid()}


@register_task("test-fail")
def fail_task(cell: CellSpec, context: TaskContext) -> dict[str, Any]:
    """Always raises, so the runner's error capture can be checked."""
    raise RuntimeError(f"boom in cell {cell.key}")


@register_task("test-cache")
def cache_task(cell: CellSpec, context: TaskContext) -> dict[str, Any]:
    """Gets a shared "model" keyed by ``[task] model`` from the cache, recording creations."""
    task = cell.section("task")

    def create(folder: Path) -> None:
        record(task.get("record"), f"create {task['model']}")
        (folder / "weights.txt").write_text(str(task["model"]))

    path = context.cache.get_or_create("model", {"model": task["model"]}, create)
    return {"model": int((path / "weights.txt").read_text())}
