"""A training in a child process shows as a stage of the parent, like one trained in process.

``poisonlab scan --defense all`` trains lgm-net in a child process; its stderr is a log file, so
without this the CLI showed no progress for the scan's longest training.
"""

from __future__ import annotations

import re

import pytest

from poisonlab import progress
from poisonlab.models import ModelConfig
from poisonlab.train import TrainConfig
from poisonlab.train.background import BackgroundTraining
from tests.conftest import blobs_dataset

CONFIG = ModelConfig("lgm-net", 1, 8, 8, 3, head="lgm")
RECIPE = TrainConfig(epochs=2, batch_size=16, head_lr=1e-2, seed=3)


def test_the_childs_training_is_a_progress_line_here(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "_enabled", True)  # as the CLI does; stderr is not a terminal
    with BackgroundTraining(
        CONFIG, blobs_dataset(n_per_class=20), RECIPE, seed=3, threads=1
    ) as job:
        job.result()
    (line,) = capsys.readouterr().err.splitlines()
    found = re.fullmatch(
        r"training lgm-net \(lgm\): (\d+)/(\d+), epoch 2 loss [\d.]+, done in [\d.]+ s", line
    )
    assert found is not None, line
    assert found[1] == found[2] and int(found[1]) > 0  # every step the child took, counted


def test_no_line_when_progress_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    with BackgroundTraining(CONFIG, blobs_dataset(n_per_class=5), RECIPE, seed=3, threads=1) as job:
        job.result()
    assert capsys.readouterr().err == ""


def test_the_childs_report_is_read_back() -> None:
    """report_to writes a stage's state where read_report finds it (the file the parent polls)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "progress.json"
        assert progress.read_report(path) is None
        progress.report_to(path)
        try:
            assert progress.lines_enabled() and not progress.is_enabled()
            with progress.bar("training", total=3) as bar:
                bar.advance(1, info="epoch 1")
                bar.advance(2, info="epoch 2")
        finally:
            progress.report_to(None)
        state = {"description": "training", "done": 3.0, "total": 3, "info": "epoch 2"}
        assert progress.read_report(path) == state
        assert list(Path(folder).iterdir()) == [path]  # the temporary part was renamed
