"""The runner: done cells skipped, failed and stale ones retried, artifacts, pool, CLI."""

from __future__ import annotations

import json
import os
import sys

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.errors import ConfigError
from poisonlab.experiments.config import load_config
from poisonlab.experiments.runner import experiment_lock, plan, run_experiment
from poisonlab.experiments.store import Store
from tests.experiments.fake_tasks import starts

cli = CliRunner()


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
        with pytest.raises(ConfigError, match="--workers must be >= 1"):
            run_experiment(config, tmp_path / "other", workers=0)
        with pytest.raises(ConfigError, match="--address needs --executor ray"):
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
    summary = run_experiment(config, tmp_path / "runs", workers=2)
    statuses = [c.status for c in summary.cells]
    assert statuses == ["done", "failed", "done", "done"]
    assert "WorkerDied" in summary.cells[1].error_line
    pids = {c.metrics["pid"] for c in summary.cells if c.status == "done"}
    assert os.getpid() not in pids and len(starts(record)) == 4


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
