"""A task for the process-pool tests that kills its own worker at chosen moments.

It lives in an importable module (not conftest) because worker processes import the task's module
by name. Every execution appends ``start KEY PID`` to ``[task] record``, like the fake tasks.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from poisonlab.experiments import executors
from poisonlab.experiments.tasks_base import CellSpec, TaskContext, register_task
from tests.experiments.fake_tasks import record


def _kill_me() -> None:
    """SIGKILL this process, as the out-of-memory killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def _exit_after_the_result() -> None:
    """Make this worker exit with code 7 right after it has sent the cell's outcome, before it
    takes another job: the driver finds the worker dead with a complete result in its pipe."""
    send = executors._send

    def send_then_exit(connection: Any, message: tuple[str, Any]) -> None:
        send(connection, message)
        if message[0] == "done":
            os._exit(7)

    executors._send = send_then_exit


def _leave_an_orphan(path: str | None, seconds: float) -> None:
    """Fork a child that sleeps ``seconds`` holding every descriptor of this worker (its pipes
    included), as a forked data-loader process would; its pid goes to the record."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only sleeps
        time.sleep(seconds)
        os._exit(0)
    record(path, f"orphan {child}")


@register_task("test-die")
def die_task(cell: CellSpec, context: TaskContext) -> dict[str, Any]:
    """Record a start, then act by ``[task] mode``:

    - ``ok``: return ``value`` = 2x and the worker's ``pid``;
    - ``exit``: ``os._exit(3)`` in the middle of the task;
    - ``kill``: SIGKILL the worker in the middle of the task;
    - ``bye``: like ``ok``, then the worker exits (code 7) as soon as the outcome is sent;
    - ``big``: return ``size`` extra metrics (megabytes once pickled, far more than a pipe holds);
    - ``interrupt``: raise KeyboardInterrupt (Ctrl-C in the driver's process) while the file
      ``[task] flag`` exists, else behave like ``ok``.

    ``orphan`` > 0 first forks a child that lingers that many seconds with the worker's pipes.
    """
    task = cell.section("task")
    path = task.get("record")
    record(path, f"start {cell.key} {os.getpid()}")
    if task.get("orphan"):
        _leave_an_orphan(path, float(task["orphan"]))
    mode = task.get("mode", "ok")
    result: dict[str, Any] = {"value": 2 * float(task.get("x", 0)), "pid": os.getpid()}
    if mode == "exit":
        os._exit(3)
    if mode == "kill":
        _kill_me()
        time.sleep(60)  # never reached: the signal is delivered at once
    if mode == "bye":
        _exit_after_the_result()
    if mode == "interrupt" and os.path.exists(task["flag"]):
        raise KeyboardInterrupt
    return result | {f"m{i}": i for i in range(int(task.get("size", 0)))}


def exit_at_once(*args: object) -> None:
    """A worker entry point that exits before taking any job (a worker that cannot start)."""
    os._exit(5)
