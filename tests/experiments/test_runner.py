"""The runner: done cells skipped, failed and stale ones retried, artifacts, pool, CLI.

The process-pool tests kill workers at awkward moments (mid-task, mid-way through sending a result,
right after one, between cells) and run under :func:`within`, which fails a test that does not
finish in time instead of letting it hang.
"""

from __future__ import annotations

import array
import fcntl
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import termios
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.errors import ConfigError
from poisonlab.experiments import executors
from poisonlab.experiments.config import load_config
from poisonlab.experiments.executors import CellJob, CellOutcome, ProcessExecutor
from poisonlab.experiments.runner import RunInterrupted, experiment_lock, plan, run_experiment
from poisonlab.experiments.store import Store
from poisonlab.experiments.tasks_base import CellSpec
from tests.experiments import dying_tasks  # registers test-die
from tests.experiments.fake_tasks import starts

cli = CliRunner()
T = TypeVar("T")


def within(seconds: float, action: Callable[[], T]) -> T:
    """``action()``, run in a thread; fails the test if it has not returned after ``seconds``.

    On a timeout the message holds every thread's stack (where the driver waits), and the worker
    processes are killed so nothing keeps running after the test.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = action()
        except BaseException as exc:  # handed to the test's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        stacks = "\n".join(
            f"--- thread {ident}\n" + "".join(traceback.format_stack(frame))
            for ident, frame in sys._current_frames().items()
        )
        for child in multiprocessing.active_children():
            child.kill()
        pytest.fail(f"not finished after {seconds} s (hung?); stacks:\n{stacks}", pytrace=False)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def sleep_config(write_config, tmp_path, extra: str = "", xs: str = "[1, 2, 3]"):
    """A test-sleep grid over x with an execution record in tmp_path/record."""
    record = tmp_path / "record"
    text = f'name = "sleepy"\nkind = "test-sleep"\n[task]\nx = {xs}\nrecord = "{record}"\n{extra}'
    return load_config(write_config(text)), record


def test_runs_every_cell_then_skips_them(write_config, tmp_path):
    config, record = sleep_config(write_config, tmp_path)
    runs = tmp_path / "runs"
    summary = run_experiment(config, runs)
    assert summary.ok and summary.ran == 3 and summary.skipped == 0
    assert [c.metrics["value"] for c in summary.cells] == [2.0, 4.0, 6.0]
    assert all(c.metrics["pid"] == os.getpid() for c in summary.cells)  # workers=1: in-process
    for cell in summary.cells:
        folder = runs / "sleepy" / cell.key
        assert (folder / "artifact.txt").read_text() == cell.key
        assert json.loads((folder / "cell.json").read_text())["params"]["task"]["x"] in (1, 2, 3)
        assert "sleeping" in (folder / "log.txt").read_text()
    written = json.loads((runs / "sleepy" / "config.json").read_text())
    assert written["config_hash"] == config.hash and written["versions"]["torch"]
    with Store.in_runs(runs) as store:
        rows = store.cells("sleepy")
        assert [r.status for r in rows] == ["done"] * 3 and all(r.seconds >= 0 for r in rows)
        assert rows[0].versions["python"] and rows[0].hostname
        assert store.experiment("sleepy").config_hash == config.hash
    again = run_experiment(config, runs)
    assert again.ok and again.ran == 0 and again.skipped == 3
    assert len(starts(record)) == 3  # nothing executed twice


def test_failed_cells_are_recorded_and_retried_with_a_clean_folder(write_config, tmp_path):
    flag = tmp_path / "fail-flag"
    flag.touch()
    config, record = sleep_config(
        write_config,
        tmp_path,
        xs="[1, 2]",
        extra=f'fail_flag = ["{flag}", ""]\n[grid]\nzip = [["task.x", "task.fail_flag"]]\n',
    )
    runs = tmp_path / "runs"
    first = run_experiment(config, runs)
    assert not first.ok and first.count("failed") == 1 and first.count("done") == 1
    failed = next(c for c in first.cells if c.status == "failed")
    assert failed.error_line == "ValueError: asked to fail (x=1)"
    assert "Traceback" in failed.error and "sleep_task" in failed.error
    stale = runs / "sleepy" / failed.key / "stale.txt"
    stale.write_text("from the failed attempt")
    no_retry = run_experiment(config, runs, retry_failed=False)
    assert no_retry.ran == 0 and no_retry.count("failed") == 1
    flag.unlink()
    second = run_experiment(config, runs)
    assert second.ok and second.ran == 1
    assert not stale.exists()  # the folder was emptied before the retry
    assert next(c for c in second.cells if c.key == failed.key).attempts == 2
    assert starts(record).count(failed.key) == 2 and len(starts(record)) == 3


def test_only_that_matches_no_cell_is_refused(write_config, tmp_path):
    """Issue: `run CONFIG --only nope` ran nothing and printed "0 done ... 0 pending", as if the
    run had succeeded; the typo is refused before the runs folder is touched."""
    config, _ = sleep_config(write_config, tmp_path)
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"--only 'x=9' matches none of the 3 cells of sleepy"):
        run_experiment(config, runs, only="x=9")
    assert not runs.exists()
    with pytest.raises(ConfigError, match="matches none"):
        plan(config, runs, only="x=9")


def test_cells_left_running_are_retried_and_only_filters(write_config, tmp_path):
    config, record = sleep_config(write_config, tmp_path)
    runs = tmp_path / "runs"
    only = run_experiment(config, runs, only="x=2")
    assert [c.description for c in only.cells] == ["x=2"] and only.ran == 1
    with Store.in_runs(runs) as store:
        assert store.counts("sleepy") == {"pending": 2, "running": 0, "done": 1, "failed": 0}
        key = store.cells("sleepy")[0].key
        store.mark_running("sleepy", key, config_hash=config.hash)  # as if the driver was killed
    planned = plan(config, runs)
    assert [(p.status, p.run) for p in planned] == [
        ("running", True),
        ("done", False),
        ("pending", True),
    ]
    summary = run_experiment(config, runs)
    assert summary.ok and summary.ran == 2 and len(starts(record)) == 3


def test_task_errors_never_stop_the_run(write_config, tmp_path):
    text = 'kind = "test-sleep"\n[task]\nmode = ["bad-metric", "ok"]\n'
    summary = run_experiment(load_config(write_config(text)), tmp_path / "runs")
    bad, good = summary.cells
    assert bad.status == "failed" and "not a number" in bad.error_line
    assert good.status == "done"
    fail = run_experiment(load_config(write_config('kind = "test-fail"\n', "f.toml")), tmp_path)
    assert fail.cells[0].error_line.startswith("RuntimeError: boom in cell")


def test_a_failed_cell_is_named_once_in_the_log(write_config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="poisonlab.experiments.runner"):
        run_experiment(load_config(write_config('kind = "test-fail"\n', "f.toml")), tmp_path)
        text = 'kind = "test-sleep"\n[task]\nfail = [true, false]\n'
        run_experiment(load_config(write_config(text, "two.toml")), tmp_path)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert failures[0].startswith("the cell failed: RuntimeError: boom in cell"), failures
    assert failures[1].startswith("cell fail=true failed: ValueError: asked to fail"), failures
    assert len(failures) == 2


def test_a_one_cell_experiment_is_counted_in_the_singular(write_config, tmp_path):
    config = write_config('name = "one"\nkind = "test-sleep"\n')
    runs = tmp_path / "runs"
    dry = cli.invoke(app, ["run", str(config), "--runs", str(runs), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert re.search(r"one \(test-sleep\): 1 cell\s*\n", dry.output), dry.output
    assert "1 of 1 cell would run" in dry.output
    done = cli.invoke(app, ["run", str(config), "--runs", str(runs), "-q"])
    assert done.exit_code == 0 and re.search(r"one: 1 cell\s*\n", done.output), done.output


def test_cells_share_cached_models(write_config, tmp_path):
    record = tmp_path / "record"
    text = f'kind = "test-cache"\nseeds = [0, 1]\n[task]\nmodel = [1, 2]\nrecord = "{record}"\n'
    summary = run_experiment(load_config(write_config(text)), tmp_path / "runs")
    assert summary.ok and len(summary.cells) == 4
    assert sorted(record.read_text().split("\n")[:-1]) == ["create 1", "create 2"]
    assert [c.metrics["model"] for c in summary.cells] == [1, 1, 2, 2]


def test_a_second_driver_on_the_same_experiment_is_refused(write_config, tmp_path):
    config, _ = sleep_config(write_config, tmp_path)
    with experiment_lock(tmp_path / "runs" / "sleepy", "sleepy"):
        with pytest.raises(ConfigError, match="another process"):
            run_experiment(config, tmp_path / "runs")
        with pytest.raises(
            ConfigError, match="unknown executor 'slurm'; choose one of: local, ray"
        ):
            run_experiment(config, tmp_path / "other", executor="slurm")
        with pytest.raises(ConfigError, match="`workers` must be >= 1"):
            run_experiment(config, tmp_path / "other", workers=0)
        with pytest.raises(ConfigError, match="`address` needs the ray `executor`"):
            run_experiment(config, tmp_path / "other", address="auto")


def test_ray_missing_is_a_config_error(write_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    config, _ = sleep_config(write_config, tmp_path)
    with pytest.raises(ConfigError, match=r"poisonlab\[ray\]"):
        run_experiment(config, tmp_path / "runs", executor="ray")


def test_process_pool_runs_cells_in_workers_and_survives_a_dead_worker(write_config, tmp_path):
    config, record = sleep_config(
        write_config,
        tmp_path,
        xs="[1, 2, 3, 4]",
        extra='mode = ["ok", "die", "ok", "ok"]\n[grid]\nzip = [["task.x", "task.mode"]]\n',
    )
    summary = within(90, lambda: run_experiment(config, tmp_path / "runs", workers=2))
    statuses = [c.status for c in summary.cells]
    assert statuses == ["done", "failed", "done", "done"]
    assert "WorkerDied" in summary.cells[1].error_line
    pids = {c.metrics["pid"] for c in summary.cells if c.status == "done"}
    assert os.getpid() not in pids and len(starts(record)) == 4


def die_grid(write_config, tmp_path: Path, modes: list[str], extra: str = ""):
    """A test-die grid whose cell i has x = i and mode = ``modes[i]``, plus the ``extra`` [task]
    lines; the execution record is tmp_path/record."""
    columns = {"x": list(range(len(modes))), "mode": modes}
    lines = "".join(f"{name} = {json.dumps(values)}\n" for name, values in columns.items())
    text = (
        f'name = "dying"\nkind = "test-die"\n[task]\n{lines}record = "{tmp_path / "record"}"\n'
        f'{extra}[grid]\nzip = [["task.x", "task.mode"]]\n'
    )
    return load_config(write_config(text)), tmp_path / "record"


def die_job(tmp_path: Path, x: int, **task: object) -> CellJob:
    """One test-die cell, as the runner hands it to an executor."""
    params = {"task": {"x": x, "record": str(tmp_path / "record"), **task}}
    spec = CellSpec("dying", "test-die", params)
    return CellJob(
        spec,
        "tests.experiments.dying_tasks",
        str(tmp_path / "cells" / spec.key),
        str(tmp_path / "cache"),
        sys_path=tuple(p for p in sys.path if p and Path(p).is_dir()),
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail (not hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def recorded_pids(record: Path, word: str) -> list[int]:
    """Pids of the record's lines that start with ``word`` (``orphan PID``)."""
    if not record.exists():
        return []
    lines = [line.split() for line in record.read_text().splitlines()]
    return [int(line[-1]) for line in lines if line[0] == word]


def unread_bytes(connection) -> int:
    """Bytes written into a pipe and not read yet (FIONREAD on the reading end)."""
    count = array.array("i", [0])
    fcntl.ioctl(connection.fileno(), termios.FIONREAD, count)
    return count[0]


def test_workers_dying_mid_task_fail_only_their_own_cells(write_config, tmp_path):
    modes = ["ok", "exit", "kill", "ok", "kill", "ok"]
    config, record = die_grid(write_config, tmp_path, modes)

    summary = within(120, lambda: run_experiment(config, tmp_path / "runs", workers=2))

    assert [c.status for c in summary.cells] == ["done" if m == "ok" else "failed" for m in modes]
    for x, (cell, mode) in enumerate(zip(summary.cells, modes, strict=True)):
        if mode == "ok":
            assert cell.metrics["value"] == 2 * x and cell.metrics["pid"] != os.getpid()
        elif mode == "exit":
            assert re.fullmatch(
                r"WorkerDied: worker process \d+ exited with code 3 while running the cell",
                cell.error_line,
            )
        else:
            assert "was killed by SIGKILL (the out-of-memory killer" in cell.error_line
    assert sorted(starts(record)) == sorted(c.key for c in summary.cells)  # each ran once
    with Store.in_runs(tmp_path / "runs") as store:
        assert store.counts("dying") == {"pending": 0, "running": 0, "done": 3, "failed": 3}


@pytest.mark.parametrize("orphan", [0, 300], ids=["alone", "orphan-keeps-its-pipes"])
def test_a_worker_killed_while_sending_its_result_fails_only_that_cell(tmp_path, orphan):
    """Killed part-way through writing megabytes into its pipe. With ``orphan``, a forked child
    of the worker keeps the pipes open for minutes, so end-of-file never comes: the driver must
    neither wait for the rest of the message nor for the pipe to close."""
    big = die_job(tmp_path, 1, mode="big", size=300_000, orphan=orphan)
    small = die_job(tmp_path, 2)
    orphans: list[int] = []

    def scenario() -> tuple[list[CellOutcome], int]:
        with ProcessExecutor(2) as pool:
            pool.submit(big)
            worker = pool._workers[0]  # the first idle worker takes the job
            # Nobody reads the pipe yet. Once it holds more than the acknowledgement (one small
            # frame), the worker is part-way through a message larger than any pipe.
            wait_until(lambda: unread_bytes(worker.results) > 512, "the result is being sent")
            orphans.extend(recorded_pids(tmp_path / "record", "orphan"))
            os.kill(worker.process.pid, signal.SIGKILL)
            pool.submit(small)
            return [pool.next_outcome(), pool.next_outcome()], worker.process.pid

    try:
        outcomes, pid = within(120, scenario)
    finally:
        for child in orphans:
            os.kill(child, signal.SIGKILL)
    assert len(orphans) == (1 if orphan else 0)
    by_key = {outcome.key: outcome for outcome in outcomes}
    assert set(by_key) == {big.key, small.key}
    failed = by_key[big.key]
    assert failed.status == "failed" and failed.metrics == {}
    assert failed.error.startswith(f"WorkerDied: worker process {pid} was killed by SIGKILL")
    assert failed.seconds > 0 and failed.hostname
    done = by_key[small.key]
    assert done.status == "done" and done.metrics["value"] == 4.0 and done.metrics["pid"] != pid


def test_workers_dying_between_cells_lose_no_job_and_no_result(tmp_path):
    """Three deaths outside a task, each replaced: a worker that exits right after sending its
    result (which still counts), an idle worker killed before its next job is sent (broken
    pipe), and a worker killed with a job in its pipe that it never took (the job runs on the
    next worker). Every cell runs once and is done."""
    jobs = [die_job(tmp_path, 1, mode="bye"), die_job(tmp_path, 2), die_job(tmp_path, 3)]

    def scenario() -> list[CellOutcome]:
        with ProcessExecutor(1) as pool:
            pool.submit(jobs[0])
            pool._workers[0].process.join(60)  # gone before the driver read anything
            first = pool.next_outcome()
            idle = pool._workers[0].process  # the replacement, waiting for a job
            idle.kill()
            idle.join(60)
            pool.submit(jobs[1])  # its pipe is closed: the job goes to the next worker
            second = pool.next_outcome()
            os.kill(second.metrics["pid"], signal.SIGSTOP)
            pool.submit(jobs[2])  # waits in the stopped worker's pipe, never acknowledged
            os.kill(second.metrics["pid"], signal.SIGKILL)
            return [first, second, pool.next_outcome()]

    outcomes = within(120, scenario)
    assert [o.key for o in outcomes] == [job.key for job in jobs]
    assert [o.status for o in outcomes] == ["done"] * 3
    assert [o.metrics["value"] for o in outcomes] == [2.0, 4.0, 6.0]
    assert len({o.metrics["pid"] for o in outcomes}) == 3
    assert starts(tmp_path / "record") == [job.key for job in jobs]  # each executed once


def test_a_pool_whose_workers_cannot_start_stops_with_an_error(tmp_path, monkeypatch):
    """Workers that die before taking any job (a broken environment) end the run with an error
    instead of being replaced forever; the job was never run."""
    monkeypatch.setattr(executors, "_worker_main", dying_tasks.exit_at_once)

    def scenario() -> None:
        with ProcessExecutor(1) as pool:
            pool.submit(die_job(tmp_path, 1))
            pool.next_outcome()

    with pytest.raises(
        RuntimeError, match=r"keep dying before running a cell \(the last one exited with code 5\)"
    ):
        within(120, scenario)
    assert not (tmp_path / "record").exists()


def test_ctrl_c_in_the_drivers_process_leaves_the_run_resumable(write_config, tmp_path):
    """--workers 1 runs cells in the driver, where Ctrl-C interrupts the running cell: finished
    cells stay done, the interrupted one and those after it are pending and run next time."""
    flag = tmp_path / "ctrl-c"
    flag.touch()
    modes = ["ok", "interrupt", "ok"]
    config, record = die_grid(write_config, tmp_path, modes, extra=f'flag = "{flag}"\n')
    runs = tmp_path / "runs"

    with pytest.raises(RunInterrupted) as interrupted:
        run_experiment(config, runs)

    summary = interrupted.value.summary
    assert summary.interrupted
    assert [c.status for c in summary.cells] == ["done", "pending", "pending"]
    with Store.in_runs(runs) as store:
        assert store.counts("dying") == {"pending": 2, "running": 0, "done": 1, "failed": 0}
    flag.unlink()
    again = run_experiment(config, runs)
    assert again.ok and again.ran == 2 and [c.metrics["value"] for c in again.cells] == [0, 2, 4]
    first, second, third = (c.key for c in again.cells)
    assert starts(record) == [first, second, second, third]


def test_cli_run_dry_run_and_errors(write_config, tmp_path):
    config = write_config('name = "cli"\nkind = "test-sleep"\n[task]\nx = [1, 2]\n')
    runs = tmp_path / "runs"
    dry = cli.invoke(app, ["run", str(config), "--runs", str(runs), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 of 2 cells would run" in dry.output and not runs.exists()
    done = cli.invoke(
        app, ["run", str(config), "--runs", str(runs), "-q", "--set", "task.x=[1,2,3]"]
    )
    assert done.exit_code == 0, done.output
    assert "3 done (3 now), 0 failed" in done.output and "value" in done.output
    again = cli.invoke(app, ["run", str(config), "--runs", str(runs), "--dry-run"])
    assert "0 of 2 cells would run" in again.output and "done" in again.output
    bad = write_config('kind = "test-sleep"\n[task]\nfail = [true, false]\n', "bad.toml")
    failed = cli.invoke(app, ["run", str(bad), "--runs", str(runs), "-q"])
    assert failed.exit_code == 1
    assert "ValueError: asked to fail" in failed.output and "1 failed" in failed.output
    wrong = write_config('kind = "test-sleep"\n[attack]\nname = "badnet"\n', "wrong.toml")
    error = cli.invoke(app, ["run", str(wrong), "--runs", str(runs)])
    assert error.exit_code == 2 and "wrong.toml" in error.output and "badnets" in error.output
    help_text = cli.invoke(app, ["run", "--help"]).output
    assert "--executor" in help_text and "poisonlab run experiments/" in help_text


def test_cli_run_records_threads_from_the_option_as_the_option(write_config, tmp_path, monkeypatch):
    """run --threads reaches the cells, in worker processes too, and cell.json says the user typed
    --threads; a user's POISONLAB_THREADS without the option is recorded as that variable."""
    monkeypatch.setenv("POISONLAB_THREADS", "1")
    config = write_config('name = "threads"\nkind = "test-sleep"\n[task]\nx = [1, 2]\n')
    runs = tmp_path / "runs"

    def sources(*options: str) -> list[tuple[int, str]]:
        result = cli.invoke(app, ["run", str(config), "--runs", str(runs), "-q", *options])
        assert result.exit_code == 0, result.output
        cells = sorted((runs / "threads").glob("*/cell.json"))
        assert len(cells) == 2
        records = [json.loads(cell.read_text())["threads"] for cell in cells]
        shutil.rmtree(runs)
        return [(record["threads"], record["source"]) for record in records]

    assert sources("--threads", "1", "--workers", "2") == [(1, "--threads")] * 2
    assert sources("--threads", "1") == [(1, "--threads")] * 2
    assert sources() == [(1, "POISONLAB_THREADS")] * 2


@pytest.mark.parametrize("threads", [0, -2, "two"])
def test_a_bad_thread_count_is_refused_before_any_cell_runs(write_config, tmp_path, threads):
    """run_experiment(threads=0) ran every cell, each failing on its own with the same error; it
    is refused up front, before the runs folder is touched."""
    config, record = sleep_config(write_config, tmp_path)
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=rf"`threads` {threads}: expected a whole number"):
        run_experiment(config, runs, threads=threads)
    assert not runs.exists() and starts(record) == []
