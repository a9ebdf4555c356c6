"""A small grid through a real local Ray runtime (started and shut down by the executor)."""

from __future__ import annotations

import os

import pytest

from poisonlab.experiments.config import load_config
from poisonlab.experiments.runner import run_experiment
from poisonlab.experiments.store import Store
from tests.experiments.fake_tasks import starts

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'poisonlab[ray]'")


def test_small_grid_on_a_local_ray_runtime(write_config, tmp_path):
    record = tmp_path / "record"
    text = (
        'name = "on-ray"\nkind = "test-sleep"\n'
        f'[task]\nx = [1, 2, 3]\nfail = [false, false, true]\nrecord = "{record}"\n'
        '[grid]\nzip = [["task.x", "task.fail"]]\n'
    )
    config = load_config(write_config(text))
    runs = tmp_path / "runs"

    summary = run_experiment(config, runs, executor="ray", workers=2, cpus_per_task=1)

    assert not ray.is_initialized()  # the runtime this run started is shut down again
    assert summary.executor == "ray"
    assert [c.status for c in summary.cells] == ["done", "done", "failed"]
    assert [c.metrics.get("value") for c in summary.cells[:2]] == [2.0, 4.0]
    assert all(c.metrics["pid"] != os.getpid() for c in summary.cells[:2])  # ran in Ray workers
    assert summary.cells[2].error_line == "ValueError: asked to fail (x=3)"
    with Store.in_runs(runs) as store:
        rows = store.cells("on-ray")
    assert all(r.hostname and r.versions.get("poisonlab") for r in rows)
    for row in rows:  # the Ray tasks wrote their artifacts into the runs folder
        assert (runs / "on-ray" / row.key / "artifact.txt").read_text() == row.key

    again = run_experiment(config, runs)  # resumes locally: done cells skipped, failed retried

    assert again.ran == 1 and [c.status for c in again.cells] == ["done", "done", "failed"]
    assert len(starts(record)) == 4
