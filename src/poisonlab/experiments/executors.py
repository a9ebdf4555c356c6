"""Executors: where the cells of an experiment run (in-process, a process pool, or Ray tasks).

Every executor runs the same function, :func:`execute_cell`, on a picklable :class:`CellJob` and
hands back a :class:`CellOutcome`; only the driver (:mod:`poisonlab.experiments.runner`) writes the
results store, as outcomes arrive, so a killed driver loses only cells still running.

- ``SequentialExecutor``: in the driver's process, one cell at a time (``--workers 1``). Ctrl-C
  interrupts the running cell directly.
- ``ProcessExecutor``: ``--workers N`` persistent worker processes (spawn context, so no forked
  torch state), each using ``max(1, cores // N)`` threads and its own pair of pipes. Workers
  ignore SIGINT: the driver handles Ctrl-C and terminates them. A worker that dies (segfault, out
  of memory, ``os._exit``) fails the cell it was running and is replaced; the other cells go on.
- ``RayExecutor``: each cell is a Ray remote task with ``num_cpus = cpus_per_task``, on a running
  cluster (``address``) or a local Ray runtime started here and shut down afterwards. Ray is an
  optional extra imported only here. The runs folder must be visible to every Ray node (a shared
  file system), since cells write their artifacts and the cache there.

Threads. Every cell applies :mod:`poisonlab.runtime`'s policy before its task runs: a count the
user set (``poisonlab run --threads``, carried by the job with its label as
``CellJob.user_threads``, then ``POISONLAB_THREADS``, ``OMP_NUM_THREADS``) wins, then the
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
import pickle
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from poisonlab import runtime
from poisonlab.errors import ConfigError
from poisonlab.experiments.cache import DirectoryCache
from poisonlab.experiments.store import package_versions
from poisonlab.experiments.tasks_base import TASKS, CellSpec, TaskContext
from poisonlab.validation import IMAGE_SIZE

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
    threads: int | None = None  # the executor's share of the cores
    user_threads: int | None = None  # a count the run was given (``run --threads``): wins
    user_threads_source: str = ""  # where ``user_threads`` came from, as recorded ("--threads")
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
    if job.user_threads is not None:
        return runtime.use_threads(job.user_threads, source=job.user_threads_source or None)
    explicit, _ = runtime.requested_threads(None)
    if explicit is None and job.threads:
        return runtime.use_threads(job.threads, source="executor share of the cores")
    data = job.spec.params.get("data")
    data = data if isinstance(data, dict) else {}
    size = data.get("image_size")
    size = IMAGE_SIZE.convert(size) if size is not None and IMAGE_SIZE.accepts(size) else None
    shape = runtime.expected_image_shape(data.get("source"), size)
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


# Worker -> driver messages travel in frames of at most PIPE_BUF bytes: one ``send_bytes`` call
# each, which ``Connection`` writes with a single write() for so short a message (a 4-byte length,
# a flag saying whether more frames follow, a piece of the pickled message). POSIX writes that many
# bytes into a pipe whole or not at all, even when the writer is killed, so a frame the driver sees
# has fully arrived and reading it never waits for a worker that died halfway through a message
# (whose pipe a forked descendant, such as a data-loader process, may still hold open).
_FRAME = getattr(select, "PIPE_BUF", 512) - 5
_MORE, _LAST = b"+", b"."


def _send(connection: Connection, message: tuple[str, Any]) -> None:
    """Send ``message`` to the driver in frames (above)."""
    data = memoryview(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    for start in range(0, len(data), _FRAME):
        last = start + _FRAME >= len(data)
        connection.send_bytes((_LAST if last else _MORE) + data[start : start + _FRAME])


def _worker_main(jobs: Connection, results: Connection) -> None:
    """Worker loop: receive ``(key, pickled job)``, acknowledge it, run it, send the outcome.

    The two pipes belong to this worker alone and every message is written by this thread before
    the next step starts, so a message is never left behind in a buffer when the process dies
    (``os._exit``, a segfault, the OOM killer) and no lock is shared with other workers. The
    acknowledgement is written before the job is even unpickled: a worker that dies after it
    fails its cell, one that dies before it hands the job back to the pool.

    A worker exits when told to (``None``) or when its driver is gone: the job pipe reaches
    end-of-file, and on Linux the worker is also killed with the driver, so no orphan keeps running.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    _die_with_parent()
    while True:
        try:
            item = jobs.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        key, payload = item
        try:
            _send(results, ("start", key))
            try:
                job = pickle.loads(payload)
            except Exception as exc:
                outcome = CellOutcome(key, "failed", error=format_error(exc))
            else:
                outcome = execute_cell(job)
            _send(results, ("done", outcome))
        except OSError:  # the driver closed our result pipe: it is gone
            return


@dataclass
class _Worker:
    """One worker process, the driver's ends of its two pipes, and the job it holds."""

    process: Any
    jobs: Connection  # driver -> worker: (key, pickled job), or None to stop
    results: Connection  # worker -> driver: ("start", key), then ("done", outcome)
    job: tuple[str, bytes] | None = None  # handed to this worker, outcome not received yet
    started: float | None = None  # when the worker acknowledged ``job`` (time.time())
    served: bool = False  # the worker has acknowledged at least one job
    inbox: bytearray = field(default_factory=bytearray)  # frames of a message not complete yet


class ProcessExecutor(Executor):
    """``workers`` spawned processes, each fed through its own pair of pipes.

    Why one pipe pair per worker rather than shared queues: a ``multiprocessing.Queue`` shared by
    all workers writes through a background thread under a lock held in shared memory. A worker
    that died while that thread held the lock, or before it wrote the "started" message, blocked
    the other workers' results or lost the message, and the driver waited forever. Here a worker
    writes only to its own pipe, from its main thread, in frames the operating system delivers
    whole (see ``_send``), so the driver never waits for the rest of a dead worker's message. The
    driver waits on every result pipe and process sentinel at once
    (``multiprocessing.connection.wait``) and also checks exit codes, so a death is seen within
    ``POLL_SECONDS`` even when a forked descendant of the worker keeps its pipes open. What a dead
    worker sent completely is still used (a cell finished just before an OOM kill stays done); a
    half-sent message is dropped.
    """

    POLL_SECONDS = 1.0
    """Longest wait between two liveness checks of the workers."""

    def __init__(self, workers: int, *, cores: int | None = None) -> None:
        import multiprocessing

        self.slots = workers
        self.threads = max(1, (cores or runtime.cpu_count()) // workers)
        self._ctx = multiprocessing.get_context("spawn")
        self._waiting: deque[tuple[str, bytes]] = deque()  # submitted, not handed to a worker yet
        self._ready: deque[CellOutcome] = deque()
        self._workers: list[_Worker] = []
        self._false_starts = 0  # workers in a row that died before acknowledging any job
        self._stopping = False
        try:
            for _ in range(workers):
                self._workers.append(self._start())
        except BaseException:
            self.close(cancel=True)
            raise

    def _start(self) -> _Worker:
        job_reader, job_writer = self._ctx.Pipe(duplex=False)
        result_reader, result_writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, args=(job_reader, result_writer), daemon=True
        )
        try:
            process.start()
        except BaseException:
            job_writer.close()
            result_reader.close()
            raise
        finally:
            # The worker holds its own copies now; closing ours makes its death close the pipes.
            job_reader.close()
            result_writer.close()
        return _Worker(process, job_writer, result_reader)

    def submit(self, job: CellJob) -> None:
        self._waiting.append((job.key, pickle.dumps(job)))
        self._dispatch()

    def next_outcome(self) -> CellOutcome:
        while not self._ready:
            if not self._waiting and all(worker.job is None for worker in self._workers):
                raise RuntimeError("next_outcome() called with no job outstanding")
            self._dispatch()
            self._poll()
        return self._ready.popleft()

    def _dispatch(self) -> None:
        """Hand waiting jobs to idle workers."""
        while self._waiting:
            idle = next((worker for worker in self._workers if worker.job is None), None)
            if idle is None:
                return
            idle.job = self._waiting.popleft()
            try:
                idle.jobs.send(idle.job)
            except OSError:  # the worker is gone; _retire puts the job back in front
                self._retire(idle)

    def _poll(self) -> None:
        """Wait until a worker sends something or exits (at most ``POLL_SECONDS``); handle it."""
        owners: dict[Any, _Worker] = {}
        for worker in self._workers:
            owners[worker.results] = worker
            owners[worker.process.sentinel] = worker
        lost: dict[int, _Worker] = {}
        for handle in wait(list(owners), timeout=self.POLL_SECONDS):
            worker = owners[handle]
            if handle is not worker.results or not self._read(worker):
                lost[id(worker)] = worker
        for worker in self._workers:
            # The sentinel stays open while a forked descendant of the worker lives; the exit
            # code does not wait for it.
            if worker.process.exitcode is not None:
                lost[id(worker)] = worker
        for worker in lost.values():
            self._retire(worker)

    def _read(self, worker: _Worker) -> bool:
        """Handle every whole frame waiting in ``worker``'s result pipe, never waiting for more.

        False once the pipe is closed (the worker is gone).
        """
        try:
            while worker.results.poll():
                frame = worker.results.recv_bytes()
                worker.inbox += frame[1:]
                if frame[:1] == _LAST:
                    message = pickle.loads(worker.inbox)
                    worker.inbox = bytearray()
                    self._handle(worker, message)
        except (EOFError, OSError):
            return False
        return True

    def _handle(self, worker: _Worker, message: tuple[str, Any]) -> None:
        """A worker's message: it started its job, or here is the job's outcome."""
        kind, value = message
        if kind == "start":
            worker.started, worker.served = time.time(), True
            self._false_starts = 0
        else:
            worker.job, worker.started = None, None
            self._ready.append(value)

    def _retire(self, worker: _Worker) -> None:
        """Replace a dead worker: keep what it sent completely, fail the cell it was running, and
        put a job it had not acknowledged back in front of the queue for another worker."""
        process = worker.process
        if process.is_alive():
            process.kill()
        process.join(timeout=5)
        self._read(worker)  # what it sent before dying; a half-sent message is dropped
        worker.jobs.close()
        worker.results.close()
        if worker.job is not None and worker.started is not None:
            now = time.time()
            error = f"WorkerDied: worker process {process.pid} {_exit_text(process.exitcode)}"
            outcome = CellOutcome(
                worker.job[0],
                "failed",
                error=error + " while running the cell",
                started=worker.started,
                finished=now,
                seconds=now - worker.started,
                hostname=socket.gethostname(),
            )
            self._ready.append(outcome)
        elif worker.job is not None:
            self._waiting.appendleft(worker.job)
        if not worker.served:
            self._false_starts += 1
            if self._false_starts > 3 * self.slots:
                raise RuntimeError(
                    "worker processes keep dying before running a cell "
                    f"(the last one {_exit_text(process.exitcode)})"
                )
        self._workers[self._workers.index(worker)] = self._start()

    def close(self, *, cancel: bool = False) -> None:
        """Stop the workers: after their current cell (``cancel=False``) or at once.

        Idempotent; a call interrupted (a second Ctrl-C) leaves the rest to the next call.
        """
        if not cancel and not self._stopping:
            for worker in self._workers:
                with contextlib.suppress(OSError, ValueError):
                    worker.jobs.send(None)
        self._stopping = True
        if cancel:
            for worker in self._workers:
                with contextlib.suppress(OSError, ValueError):
                    worker.process.terminate()
        while self._workers:
            worker = self._workers[-1]
            worker.process.join(timeout=2 if cancel else 30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.jobs.close()
            worker.results.close()
            self._workers.pop()


def _exit_text(code: int | None) -> str:
    """How a worker ended, for error messages: its exit code or the signal that killed it."""
    if code is None:
        return "stopped responding"
    if code < 0:
        with contextlib.suppress(ValueError):
            name = signal.Signals(-code).name
            hint = " (the out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
            return f"was killed by {name}{hint}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


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
            raise ConfigError(f"`cpus_per_task` must be > 0, got {cpus_per_task}")
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
    """ConfigError for an unknown executor, a bad worker count, or an address without Ray."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    if address is not None and name != "ray":
        raise ConfigError("`address` needs the ray `executor`")
