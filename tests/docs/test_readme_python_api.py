"""README's "Python API" example runs as written and prints what it says: one line per defense
with its AUROC, TPR and TNR (nothing ran it; the name checks in tests/attacks/
test_readme_api_names.py only import what it names). It trains cnn-small on digits: slow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def api_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert found is not None
    return found.group(1)


def test_the_example_loops_over_the_defenses_it_prints():
    code = api_example()
    assert "for name in (" in code and 'print(f"{name:22s} AUROC' in code


@pytest.mark.slow  # trains the README's victim: about 15 s of CPU
def test_the_example_runs_and_prints_one_line_per_defense(tmp_path: Path) -> None:
    code = api_example()
    names = re.search(r"for name in \((.*?)\):", code)
    assert names is not None
    expected = [n.strip().strip('"') for n in names.group(1).split(",") if n.strip()]
    run = subprocess.run(  # a fresh interpreter: the example seeds and trains as a user's would
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    row = r"(\S+) +AUROC (\d\.\d{3})  TPR (\d\.\d{3})  TNR (\d\.\d{3})"
    parsed = [re.fullmatch(row, line) for line in lines]
    assert all(parsed), lines
    assert [m.group(1) for m in parsed if m] == expected
    # each finds BadNets on digits well above chance (0.97 to 1.00 when the example was run)
    assert all(float(m.group(2)) > 0.9 for m in parsed if m)


def test_progress_is_switched_on_as_it_says(capsys: pytest.CaptureFixture[str]) -> None:
    """ "`poisonlab.progress.enable()` shows the command line's progress ... a plain line per
    finished stage when stderr is not a terminal": training then tells its end on stderr."""
    from poisonlab import progress
    from poisonlab.models import ModelConfig, build_model
    from poisonlab.train import TrainConfig, train_model
    from tests.conftest import blobs_dataset

    assert "`poisonlab.progress.enable()`" in README.read_text(encoding="utf-8")
    data = blobs_dataset(n_per_class=10, seed=0)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0)
    recipe = TrainConfig(epochs=1, val_fraction=0.0, seed=0)
    train_model(model, data, recipe)
    assert capsys.readouterr().err == ""  # silent by default
    progress.enable()
    try:
        train_model(model, data, recipe)
    finally:
        progress.enable(False)
    assert "training: " in capsys.readouterr().err
