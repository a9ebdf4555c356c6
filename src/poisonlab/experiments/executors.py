"""Executors: where the cells of an experiment run (in-process, a process pool, or Ray tasks).

Every executor runs the same function, :func:`execute_cell`, on a picklable :class:`CellJob` and
hands back a :class:`CellOutcome`; only the driver (:mod:`poisonlab.experiments.runner`) writes the
results store, as outcomes arrive, so a killed driver loses only cells still running.

- ``SequentialExecutor``: in the driver's process, one cell at a time (``--workers 1``). Ctrl-C
  interrupts the running cell directly.
- ``ProcessExecutor``: ``--workers N`` persistent worker processes (spawn context, so no forked
  torch state), each using ``max(1, cores // N)`` threads. Workers ignore SIGINT: the driver
  handles Ctrl-C and terminates them. A worker that dies (segfault, out of memory) fails its cell
  and is replaced.
- ``RayExecutor``: each cell is a Ray remote task with ``num_cpus = cpus_per_task``, on a running
  cluster (``address``) or a local Ray runtime started here and shut down afterwards. Ray is an
  optional extra imported only here. The runs folder must be visible to every Ray node (a shared
  file system), since cells write their artifacts and the cache there.

Threads. Every cell applies :mod:`poisonlab.runtime`'s policy before its task runs: a count the
user set (``poisonlab run --threads``, ``POISONLAB_THREADS``, ``OMP_NUM_THREADS``) wins, then the
executor's share of the cores (``CellJob.threads``), then the automatic choice for the cell's data
(one thread for the built-in 8×8 digits). Worker processes import poisonlab before torch, so
OpenMP's passive wait policy holds there too. What was applied is written to the cell's
``cell.json``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import pickle
import queue
import shutil
import signal
import socket
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonlab import runtime
from poisonlab.errors import ConfigError
from poisonlab.experiments.cache import DirectoryCache
from poisonlab.experiments.store import package_versions
from poisonlab.experiments.tasks_base import TASKS, CellSpec, TaskContext

EXECUTORS = ("local", "ray")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell (picklable; paths as strings)."""

    spec: CellSpec
    task_module: str
    cell_dir: str
    cache_dir: str
    device: str = "auto"
    threads: int | None = None
    description: str = ""
    sys_path: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The cell's key (``CellSpec.key``)."""
        return self.spec.key


@dataclass(frozen=True)
class CellOutcome:
    """What running a cell produced: metrics when done, the error text when failed."""

    key: str
    status: str
    metrics: dict[str, float | int] = field(default_factory=dict)
    error: str | None = None
    started: float = 0.0
    finished: float = 0.0
    seconds: float = 0.0
    hostname: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)


def format_error(exc: BaseException, *, frames: int = 6, limit: int = 4000) -> str:
    """``Type: message`` on the first line, then the last ``frames`` frames of the traceback."""
    head = f"{type(exc).__name__}: {exc}".strip()
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-frames))
    text = f"{head}\n{tail}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(name: str, value: Any) -> float | int:
    """A metric value as a Python int or float (numpy / torch scalars unwrapped)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    raise TypeError(f"metric {name!r} = {value!r} is not a number")


def execute_cell(job: CellJob) -> CellOutcome:
    """Run one cell's task in a fresh ``cell_dir``; task exceptions become a failed outcome.

    KeyboardInterrupt is not caught: in the driver's process it stops the run (the runner puts the
    cell back to pending).
    """
    started, clock = time.time(), time.perf_counter()
    host = socket.gethostname()
    cell_dir = Path(job.cell_dir)
    try:
        for entry in job.sys_path:
            if entry not in sys.path:
                sys.path.append(entry)
        threads = apply_threads(job)
        if job.task_module and job.task_module != "__main__":
            importlib.import_module(job.task_module)
        task = TASKS.get(job.spec.kind)
        shutil.rmtree(cell_dir, ignore_errors=True)  # no stale files from an earlier attempt
        cell_dir.mkdir(parents=True)
        spec = {"experiment": job.spec.experiment, "kind": job.spec.kind, "key": job.key}
        record = spec | {"params": job.spec.params, "threads": threads.to_dict()}
        (cell_dir / "cell.json").write_text(json.dumps(record))
        context = TaskContext(cell_dir, DirectoryCache(job.cache_dir), job.device, _logger(job))
        raw = task(job.spec, context)
        if not isinstance(raw, dict):
            raise TypeError(f"task {job.spec.kind!r} returned {type(raw).__name__}, not a dict")
        metrics = {str(name): _number(name, value) for name, value in raw.items()}
        status, error = "done", None
    except Exception as exc:
        metrics, status, error = {}, "failed", format_error(exc)
    return CellOutcome(
        job.key,
        status,
        metrics,
        error,
        started,
        time.time(),
        time.perf_counter() - clock,
        host,
        package_versions(),
    )


def apply_threads(job: CellJob) -> runtime.ThreadSettings:
    """The thread policy for one cell (module docstring): the user's count, the executor's share,
    or the automatic choice for the cell's data."""
    explicit, _ = runtime.requested_threads(None)
    if explicit is None and job.threads:
        return runtime.use_threads(job.threads, source="executor share of the cores")
    data = job.spec.params.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    shape = runtime.builtin_image_shape(source) if isinstance(source, str) else None
    return runtime.use_threads(None, image_shape=shape)


def _logger(job: CellJob) -> Callable[[str], None]:
    """The task's ``log``: a line in ``cell_dir/log.txt`` and a debug log record."""
    path = Path(job.cell_dir) / "log.txt"

    def log(message: str) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        logger.debug("%s: %s", job.description or job.key, message)

    return log


class Executor(ABC):
    """Runs submitted jobs, at most ``slots`` at a time; outcomes come back in completion order."""

    slots: int = 1
    threads: int | None = None

    @abstractmethod
    def submit(self, job: CellJob) -> None:
        """Start ``job`` (the caller never has more than ``slots`` outstanding)."""

    @abstractmethod
    def next_outcome(self) -> CellOutcome:
        """Block until an outstanding job finishes and return its outcome."""

    @abstractmethod
    def close(self, *, cancel: bool = False) -> None:
        """Release workers; ``cancel`` stops outstanding jobs instead of waiting. Idempotent."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(cancel=exc_type is not None)


class SequentialExecutor(Executor):
    """Runs each job in the calling process when its outcome is asked for."""

    def __init__(self) -> None:
        self._jobs: list[CellJob] = []

    def submit(self, job: CellJob) -> None:
        self._jobs.append(job)

    def next_outcome(self) -> CellOutcome:
        return execute_cell(self._jobs.pop(0))

    def close(self, *, cancel: bool = False) -> None:
        self._jobs.clear()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the driver dies (best effort elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(jobs: Any, results: Any) -> None:
    """Worker loop: take (key, pickled job), report start, run, report the outcome.

    A worker exits when its driver is gone (killed with SIGKILL), so no orphan keeps running.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    _die_with_parent()
    parent = os.getppid()
    while True:
        try:
            item = jobs.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if item is None:
            return
        key, payload = item
        results.put(("start", key, os.getpid()))
        try:
            job = pickle.loads(payload)
        except Exception as exc:
            results.put(("done", CellOutcome(key, "failed", error=format_error(exc))))
            continue
        results.put(("done", execute_cell(job)))


class ProcessExecutor(Executor):
    """``workers`` spawned processes fed through a queue; dead workers fail their cell."""

    def __init__(self, workers: int, *, cores: int | None = None) -> None:
        import multiprocessing

        self.slots = workers
        self.threads = max(1, (cores or runtime.cpu_count()) // workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._jobs = self._ctx.Queue()
        self._results = self._ctx.Queue()
        self._running: dict[int, str] = {}
        self._ready: list[CellOutcome] = []
        self._restarts = 0
        self._closed = False
        self._processes = [self._start() for _ in range(workers)]

    def _start(self) -> Any:
        process = self._ctx.Process(
            target=_worker_main, args=(self._jobs, self._results), daemon=True
        )
        process.start()
        return process

    def submit(self, job: CellJob) -> None:
        self._jobs.put((job.key, pickle.dumps(job)))

    def next_outcome(self) -> CellOutcome:
        while not self._ready:
            try:
                self._handle(self._results.get(timeout=0.5))
            except queue.Empty:
                self._check_workers()
        return self._ready.pop(0)

    def _handle(self, message: tuple[Any, ...]) -> None:
        """A worker's message: which cell it started, or a finished cell's outcome."""
        if message[0] == "start":
            self._running[message[2]] = message[1]
            return
        outcome: CellOutcome = message[1]
        self._running = {pid: key for pid, key in self._running.items() if key != outcome.key}
        self._ready.append(outcome)

    def _check_workers(self) -> None:
        """Replace dead workers; the cell a dead worker was running fails."""
        dead = [i for i, process in enumerate(self._processes) if not process.is_alive()]
        if not dead:
            return
        with contextlib.suppress(queue.Empty):  # read what they sent just before dying first
            while True:
                self._handle(self._results.get(timeout=0.1))
        for i in dead:
            process, self._processes[i] = self._processes[i], self._start()
            key = self._running.pop(process.pid, None)
            if key is not None:
                now = time.time()
                error = (
                    f"WorkerDied: worker process {process.pid} exited with code "
                    f"{process.exitcode} while running the cell"
                )
                self._ready.append(
                    CellOutcome(key, "failed", error=error, started=now, finished=now)
                )
                continue
            self._restarts += 1
            if self._restarts > 3 * self.slots:
                raise RuntimeError(
                    f"worker processes keep dying before running a cell (exit code {process.exitcode})"
                )

    def close(self, *, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if not cancel:
            for _ in self._processes:
                self._jobs.put(None)
        for process in self._processes:
            if cancel:
                process.terminate()
            process.join(timeout=2 if cancel else 30)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        for channel in (self._jobs, self._results):
            channel.cancel_join_thread()
            channel.close()


class RayExecutor(Executor):
    """Cells as Ray remote tasks; outcomes collected with ``ray.wait`` as they complete."""

    def __init__(
        self, *, address: str | None = None, workers: int | None = None, cpus_per_task: float = 1
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'poisonlab[ray]'") from None
        if cpus_per_task <= 0:
            raise ConfigError(f"--cpus-per-task must be > 0, got {cpus_per_task}")
        self._ray = ray
        self._owned = not ray.is_initialized()
        if self._owned:
            local = None if workers is None else max(1, int(workers * cpus_per_task))
            try:
                ray.init(
                    address=address,
                    num_cpus=None if address else local,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "locally"
                raise ConfigError(f"could not start or reach Ray {where}: {exc}") from None
        cpus = float(ray.cluster_resources().get("CPU", 1))
        self.slots = workers or max(1, int(cpus // cpus_per_task))
        self.threads = max(1, int(cpus_per_task))
        self._remote = ray.remote(num_cpus=cpus_per_task, max_retries=0)(execute_cell)
        self._pending: dict[Any, str] = {}
        self._closed = False

    def submit(self, job: CellJob) -> None:
        self._pending[self._remote.remote(job)] = job.key

    def next_outcome(self) -> CellOutcome:
        ready, _ = self._ray.wait(list(self._pending), num_returns=1)
        key = self._pending.pop(ready[0])
        try:
            return self._ray.get(ready[0])
        except Exception as exc:  # the task's worker died, or Ray failed to run it
            now = time.time()
            return CellOutcome(key, "failed", error=format_error(exc), started=now, finished=now)

    def close(self, *, cancel: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if cancel:
            for ref in self._pending:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
        if self._owned:
            self._ray.shutdown()


def make_executor(
    name: str,
    *,
    workers: int | None = None,
    address: str | None = None,
    cpus_per_task: float = 1,
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); ConfigError for bad choices."""
    check_executor(name, workers=workers, address=address)
    if name == "ray":
        return RayExecutor(address=address, workers=workers, cpus_per_task=cpus_per_task)
    return SequentialExecutor() if (workers or 1) == 1 else ProcessExecutor(workers or 1)


def check_executor(name: str, *, workers: int | None = None, address: str | None = None) -> None:
    """ConfigError for an unknown executor, a bad worker count, or --address without Ray."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if address is not None and name != "ray":
        raise ConfigError("--address needs --executor ray")
