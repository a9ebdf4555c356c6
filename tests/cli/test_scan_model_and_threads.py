"""`poisonlab scan` keeps the model it trained and records its thread settings."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from poisonlab import runtime
from poisonlab.cli.main import app
from poisonlab.data import save_npz
from poisonlab.models import load_checkpoint
from tests.conftest import blobs_dataset

runner = CliRunner()


def test_trained_model_is_saved_and_rescanning_with_it_gives_the_same_scores(tmp_path):
    data = save_npz(blobs_dataset(n_per_class=40, seed=0), tmp_path / "data.npz")
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["scan", str(data), "-D", "activation-clustering,spectral-signatures", "--epochs", "2"]
    result = runner.invoke(app, [*args, "-o", str(first), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((first / "summary.json").read_text())
    record = summary["models"][0]
    assert record["source"] == "trained" and record["path"] == str(first / "model")
    checkpoint = load_checkpoint(first / "model")
    assert checkpoint.model.config.arch == "cnn-small"
    assert summary["settings"]["threads"]["threads"] == 1  # the test session's POISONLAB_THREADS
    assert summary["settings"]["threads"]["omp_wait_policy"] == "OMP_WAIT_POLICY=PASSIVE"
    again = runner.invoke(app, [*args, "--model", str(first / "model"), "-o", str(second), "-q"])
    assert again.exit_code == 0, again.output
    assert (second / "scores.csv").read_text() == (first / "scores.csv").read_text()
    assert not (second / "model").exists()  # a given model is not copied
    assert json.loads((second / "summary.json").read_text())["models"][0]["source"] == "checkpoint"


def test_threads_are_recorded_as_coming_from_the_option_or_the_environment(tmp_path):
    """--threads is the CLI's own label; without it the count keeps its own source."""
    data = save_npz(blobs_dataset(n_per_class=5, seed=0), tmp_path / "data.npz")
    result = runner.invoke(app, ["data", "info", str(data), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert runtime.current() is not None and runtime.current().source == "--threads"
    result = runner.invoke(app, ["data", "info", str(data)])  # the session's POISONLAB_THREADS
    assert result.exit_code == 0, result.output
    assert runtime.current() is not None and runtime.current().source == runtime.THREADS_ENV
