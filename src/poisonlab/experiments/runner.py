"""Run an experiment's grid resumably: skip finished cells, retry failed and interrupted ones.

Layout of a runs folder::

    RUNS/results.sqlite              every cell of every experiment (see store.py)
    RUNS/cache/<kind>/<hash>/        models and representations shared between cells (cache.py)
    RUNS/<experiment>/config.json    the resolved config of the last run, with package versions
    RUNS/<experiment>/<cell key>/    one cell's artifacts (cell.json, log.txt, what the task wrote)

Why a re-run loses nothing: a cell's status becomes ``done`` in the same transaction that commits
its metrics, after the task returned. A cell left ``running`` by a killed driver is retried
(a lock file per experiment guarantees no other driver owns it), and its folder is emptied first
so no stale artifact survives. Ctrl-C puts the running cells back to ``pending`` and raises
:class:`RunInterrupted`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from poisonlab import progress, runtime
from poisonlab.errors import ConfigError
from poisonlab.experiments.cache import DirectoryCache
from poisonlab.experiments.config import ExperimentConfig, task_names
from poisonlab.experiments.executors import (
    CellJob,
    CellOutcome,
    Executor,
    check_executor,
    make_executor,
)
from poisonlab.experiments.grid import GridCell, expand_cells
from poisonlab.experiments.store import FILENAME, NewCell, Store
from poisonlab.experiments.tasks_base import TASKS
from poisonlab.ranges import counted
from poisonlab.versions import package_versions

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, one driver per experiment by convention
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellResult:
    """A selected cell after the run: its store status, and whether this run executed it."""

    key: str
    index: int
    description: str
    status: str
    ran: bool
    seconds: float | None
    metrics: dict[str, float | int]
    error: str | None
    attempts: int

    @property
    def error_line(self) -> str:
        """First line of the error (``Type: message``), or an empty string."""
        return (self.error or "").split("\n", 1)[0]


@dataclass(frozen=True)
class RunSummary:
    """The outcome of :func:`run_experiment` over the selected cells, in grid order."""

    experiment: str
    runs_dir: str
    executor: str
    cells: tuple[CellResult, ...]
    seconds: float
    interrupted: bool = False

    def count(self, status: str) -> int:
        """Number of cells whose status is ``status`` (pending, running, done, failed)."""
        return sum(cell.status == status for cell in self.cells)

    @property
    def ran(self) -> int:
        """Cells executed by this run."""
        return sum(cell.ran for cell in self.cells)

    @property
    def skipped(self) -> int:
        """Cells not executed: done earlier, or failed earlier with retries off."""
        return sum(not cell.ran and cell.status in ("done", "failed") for cell in self.cells)

    @property
    def ok(self) -> bool:
        """True when every selected cell is done."""
        return all(cell.status == "done" for cell in self.cells)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``summary`` tells what finished (running cells are pending again)."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(
            f"interrupted: {summary.count('done')} of {counted(len(summary.cells), 'cell')} done"
        )
        self.summary = summary


@dataclass(frozen=True)
class PlannedCell:
    """A grid cell, its status in the store (``new`` when unknown) and whether a run executes it."""

    cell: GridCell
    status: str
    run: bool


def _selected(cell: GridCell, only: str | None) -> bool:
    """``--only``: a substring of the cell's description or of its key."""
    return only is None or only in cell.description or only in cell.spec.key


def _check_only(config: ExperimentConfig, cells: list[GridCell], only: str | None) -> None:
    """ConfigError when ``only`` selects no cell: a typo ran nothing and said "0 cells"."""
    if only is not None and not any(_selected(cell, only) for cell in cells):
        example = f", e.g. {cells[0].description!r}" if cells else ""
        raise ConfigError(
            f"--only {only!r} matches none of the {counted(len(cells), 'cell')} of {config.name} (their "
            f"descriptions{example}, or keys)"
        )


def _runs(status: str, retry_failed: bool) -> bool:
    return status in ("new", "pending", "running") or (status == "failed" and retry_failed)


def plan(
    config: ExperimentConfig,
    runs_dir: str | Path,
    *,
    retry_failed: bool = True,
    only: str | None = None,
) -> list[PlannedCell]:
    """What a run would do, read from the store without changing it (``--dry-run``)."""
    path = Path(runs_dir) / FILENAME
    known: dict[str, str] = {}
    if path.exists():
        with Store(path) as store:
            known = {r.key: r.status for r in store.cells(config.name, in_grid=False)}
    planned = []
    cells = expand_cells(config)
    _check_only(config, cells, only)
    for cell in cells:
        if _selected(cell, only):
            status = known.get(cell.spec.key, "new")
            planned.append(PlannedCell(cell, status, _runs(status, retry_failed)))
    return planned


@contextlib.contextmanager
def experiment_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold ``folder/.lock`` for the run; a second driver on the same experiment gets ConfigError."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            raise ConfigError(
                f"experiment {name!r} is being run by another process (pid {owner}) in "
                f"{folder.parent}; wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_resolved_config(config: ExperimentConfig, folder: Path) -> Path:
    """Write ``folder/config.json``: the resolved config, its hash and the package versions."""
    record = {
        "config": config.to_dict(),
        "config_hash": config.hash,
        "versions": package_versions(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = folder / "config.json"
    temporary = folder / f".config.json.{os.getpid()}"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(temporary, path)
    return path


def run_experiment(
    config: ExperimentConfig,
    runs_dir: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    retry_failed: bool = True,
    only: str | None = None,
    device: str = "auto",
    cpus_per_task: float = 1,
    threads: int | None = None,
    threads_source: str | None = None,
) -> RunSummary:
    """Run every selected cell of ``config`` that is not done yet, recording results as they come.

    Parameters
    ----------
    config : ExperimentConfig
        A validated config (:func:`poisonlab.experiments.config.load_config`).
    runs_dir : str or Path
        The runs folder holding ``results.sqlite``, the cache and the experiments' folders.
    executor : {"local", "ray"}
        Run cells in this machine's processes, or as Ray tasks.
    workers : int or None
        Cells at once. Local: 1 (default) runs in-process, N > 1 uses N worker processes.
        Ray: default as many as the cluster's CPUs allow (``cpus // cpus_per_task``).
    address : str or None
        Ray cluster address (``auto``, ``ray://host:10001``); None starts a local Ray runtime.
    retry_failed : bool
        Re-run cells that failed before (cells left running by a killed run are always re-run).
    only : str or None
        Run only cells whose description (``rate=0.1 seed=0 r0``) or key contains this text.
    device : str
        Passed to the tasks (``auto``, ``cpu``, ``cuda``).
    cpus_per_task : float
        Ray ``num_cpus`` per cell (also its torch threads).
    threads : int or None
        Threads for every cell, wherever it runs; None leaves each cell to POISONLAB_THREADS,
        OMP_NUM_THREADS, the executor's share of the cores or the automatic choice.
    threads_source : str or None
        Where ``threads`` came from, as each cell records it (the CLI: "--threads"); by default
        this call (``run_experiment(threads=2)``).

    Returns
    -------
    RunSummary
        The selected cells with their final status, in grid order.

    Raises
    ------
    RunInterrupted
        On Ctrl-C, after putting the running cells back to pending.
    ConfigError
        Unknown executor, Ray missing, a ``threads`` that is not a whole number >= 1, or another
        driver running the same experiment.
    """
    clock = time.perf_counter()
    check_executor(executor, workers=workers, address=address)
    if threads is not None:  # refused here, not in every cell (each would fail on its own)
        threads = runtime.parse_threads(threads)
    runs = Path(runs_dir)
    folder = runs / config.name
    cells = expand_cells(config)
    _check_only(config, cells, only)
    task_names()
    task_module = getattr(TASKS.get(config.kind), "__module__", "")
    with experiment_lock(folder, config.name), Store.in_runs(runs) as store:
        store.record_experiment(
            config.name,
            kind=config.kind,
            config_hash=config.hash,
            config=config.to_dict(),
            description=config.description,
            paper_table=config.paper.get("table"),
        )
        new = [
            NewCell(c.spec.key, c.spec.kind, c.description, c.spec.params, c.axes) for c in cells
        ]
        store.sync_grid(config.name, config.hash, new)
        stale = store.reset_running(config.name)
        if stale:
            logger.info("%d cell(s) left running by an earlier run will be retried", stale)
        write_resolved_config(config, folder)
        DirectoryCache(runs / "cache").clean_temporary()
        status = {record.key: record.status for record in store.cells(config.name)}
        selected = [cell for cell in cells if _selected(cell, only)]
        todo = [c for c in selected if _runs(status[c.spec.key], retry_failed)]
        ran: set[str] = set()
        if not todo:  # nothing to do: do not start processes or a Ray runtime
            return _summary(store, config, selected, ran, executor, clock, False)
        if executor == "local" and workers is not None:
            workers = min(workers, len(todo))
        with make_executor(
            executor, workers=workers, address=address, cpus_per_task=cpus_per_task
        ) as pool:
            source = threads_source or f"run_experiment(threads={threads!r})"
            jobs = [_job(cell, task_module, runs, device, pool, threads, source) for cell in todo]
            try:
                _drive(store, config, jobs, pool, ran)
            except BaseException as exc:
                store.reset_running(config.name)
                pool.close(cancel=True)
                if isinstance(exc, KeyboardInterrupt):
                    summary = _summary(store, config, selected, ran, executor, clock, True)
                    raise RunInterrupted(summary) from None
                raise
        return _summary(store, config, selected, ran, executor, clock, False)


def _job(
    cell: GridCell,
    task_module: str,
    runs: Path,
    device: str,
    pool: Executor,
    threads: int | None,
    threads_source: str,
) -> CellJob:
    return CellJob(
        spec=cell.spec,
        task_module=task_module,
        cell_dir=str((runs / cell.spec.experiment / cell.spec.key).resolve()),
        cache_dir=str((runs / "cache").resolve()),
        device=device,
        threads=pool.threads,
        user_threads=threads,
        user_threads_source=threads_source,
        description=cell.description,
        sys_path=tuple(p for p in sys.path if p and Path(p).is_dir()),
    )


def _drive(
    store: Store, config: ExperimentConfig, jobs: list[CellJob], pool: Executor, ran: set[str]
) -> None:
    """Keep ``pool.slots`` cells in flight; commit each outcome as it arrives."""
    waiting = deque(jobs)
    in_flight: dict[str, CellJob] = {}
    with progress.bar(config.name, total=len(jobs)) as bar:
        while waiting or in_flight:
            while waiting and len(in_flight) < pool.slots:
                job = waiting.popleft()
                store.mark_running(config.name, job.key, config_hash=config.hash)
                pool.submit(job)
                in_flight[job.key] = job
                ran.add(job.key)
                bar.advance(0, info=job.description)
            outcome = pool.next_outcome()
            job = in_flight.pop(outcome.key)
            _commit(store, config.name, outcome)
            if outcome.status == "failed":
                first = (outcome.error or "").split("\n", 1)[0]
                logger.warning("%s failed: %s", _cell_name(job, len(jobs)), first)
            bar.advance(1, info=f"{job.description} {outcome.status}")


def _cell_name(job: CellJob, count: int) -> str:
    """``the cell`` when it runs alone with no varying axis, else ``cell x=1 seed=0``."""
    if count == 1 and job.description in ("", "cell"):
        return "the cell"
    return f"cell {job.description or job.key}"


def _commit(store: Store, experiment: str, outcome: CellOutcome) -> None:
    store.finish(
        experiment,
        outcome.key,
        status=outcome.status,
        metrics=outcome.metrics if outcome.status == "done" else None,
        error=outcome.error,
        started=outcome.started or None,
        finished=outcome.finished or None,
        seconds=outcome.seconds,
        versions=outcome.versions or None,
        hostname=outcome.hostname or None,
    )


def _summary(
    store: Store,
    config: ExperimentConfig,
    selected: list[GridCell],
    ran: set[str],
    executor: str,
    clock: float,
    interrupted: bool,
) -> RunSummary:
    records = {record.key: record for record in store.cells(config.name)}
    results = []
    for cell in selected:
        record = records[cell.spec.key]
        results.append(
            CellResult(
                key=record.key,
                index=cell.index,
                description=cell.description,
                status=record.status,
                ran=record.key in ran,
                seconds=record.seconds,
                metrics=record.metrics,
                error=record.error,
                attempts=record.attempts,
            )
        )
    runs_dir = str(store.path.parent)
    seconds = time.perf_counter() - clock
    return RunSummary(config.name, runs_dir, executor, tuple(results), seconds, interrupted)
