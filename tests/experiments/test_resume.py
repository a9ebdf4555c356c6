"""Real interruptions: `poisonlab run` killed with SIGKILL or stopped with SIGINT, then resumed.

The driver is the real CLI (`main()`) in a subprocess, with the fake tasks imported first; the
cells record every start in a file, so the tests can tell which cells were executed again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poisonlab.experiments.config import expand, load_config
from poisonlab.experiments.runner import run_experiment
from poisonlab.experiments.store import Store
from tests.experiments.fake_tasks import starts

ROOT = Path(__file__).resolve().parents[2]
# The driver restores Python's own Ctrl-C handler first: a test session started in the background by
# a non-interactive shell (`make test &`, a CI wrapper) has SIGINT ignored, every child inherits that,
# and Python then installs no KeyboardInterrupt handler, so the SIGINT these tests send would be lost.
DRIVER = (
    "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "import tests.experiments.fake_tasks; from poisonlab.cli.main import main; main()"
)


def start_driver(config: Path, runs: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """`poisonlab run CONFIG --runs RUNS -q ARGS` in a subprocess; stderr goes to a file."""
    log = runs.parent / f"driver-{time.monotonic_ns()}.log"
    command = [sys.executable, "-c", DRIVER, "run", str(config), "--runs", str(runs), "-q", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env
        )
    return process, log


def count_done(runs: Path) -> int:
    """Cells committed as done so far (read-only, while the driver writes)."""
    path = runs / "results.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is being created
        return 0


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Poll ``condition()`` until true; fail with the driver's output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"driver exited early ({process.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out waiting for the driver:\n{log.read_text()}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """True when the process no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def grid(write_config, tmp_path: Path, n: int, sleep: float) -> tuple[Path, Path]:
    record = tmp_path / "record"
    xs = ", ".join(str(i) for i in range(n))
    text = f'name = "resume"\nkind = "test-sleep"\n[task]\nx = [{xs}]\nsleep = {sleep}\nrecord = "{record}"\n'
    return write_config(text), record


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_run_resumes_without_redoing_finished_cells(write_config, tmp_path, workers):
    config_path, record = grid(write_config, tmp_path, n=6, sleep=0.4)
    runs = tmp_path / "runs"
    process, log = start_driver(config_path, runs, "--workers", str(workers))
    wait_for(lambda: count_done(runs) >= 2, process, log)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with Store.in_runs(runs) as store:
        before = {c.key: c.status for c in store.cells("resume")}
    finished = {key for key, status in before.items() if status == "done"}
    assert 2 <= len(finished) < 6 and set(before.values()) <= {"done", "running", "pending"}
    worker_pids = {int(line.split()[2]) for line in record.read_text().splitlines()}
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in worker_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(gone(pid) for pid in worker_pids)  # no orphaned worker keeps running cells
    started_before = len(starts(record))

    summary = run_experiment(load_config(config_path), runs)

    keys = [cell.key for cell in expand(load_config(config_path))]
    assert summary.ok and [c.key for c in summary.cells] == keys
    assert {c.key for c in summary.cells if not c.ran} == finished
    executions = starts(record)
    for key in finished:
        assert executions.count(key) == 1, "a finished cell was executed again"
    assert set(executions[started_before:]) == set(keys) - finished
    assert len(executions) - started_before == len(keys) - len(finished)


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_saves_finished_cells_and_resets_the_running_one(write_config, tmp_path, workers):
    config_path, record = grid(write_config, tmp_path, n=3, sleep=1.5)
    runs = tmp_path / "runs"
    process, log = start_driver(config_path, runs, "--workers", str(workers))
    wait_for(lambda: count_done(runs) >= 1 and len(starts(record)) > count_done(runs), process, log)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130, log.read_text()
    output = log.read_text()
    assert "interrupted" in output and "Run the same command again" in output
    assert "Traceback" not in output
    with Store.in_runs(runs) as store:
        cells = store.cells("resume")
    statuses = [c.status for c in cells]
    assert "running" not in statuses and statuses.count("done") >= 1
    assert statuses.count("done") + statuses.count("pending") == 3
    interrupted = set(starts(record)) - {c.key for c in cells if c.status == "done"}
    assert interrupted  # at least one cell was stopped mid-way

    summary = run_experiment(load_config(config_path), runs)

    assert summary.ok and summary.ran == statuses.count("pending")
    executions = starts(record)
    assert all(executions.count(c.key) == 1 for c in summary.cells if not c.ran)
    assert all(executions.count(key) == 2 for key in interrupted)
