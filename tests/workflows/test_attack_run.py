"""The victim `poisonlab attack` trains: enough steps on small data to learn the backdoor."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.train.recipes import default_recipe
from poisonlab.workflows.attack_run import VICTIM_MAX_EPOCHS, VICTIM_MIN_STEPS, victim_recipe


def test_small_data_gets_at_least_the_minimum_number_of_steps() -> None:
    recipe = victim_recipe("cnn-small", 1575, epochs=None, seed=3)  # digits + 20% BadNets
    steps_per_epoch = -(-(1575 - round(0.1 * 1575)) // 64)  # 1417 fitted images, batches of 64
    assert steps_per_epoch == 23
    assert recipe.epochs == -(-VICTIM_MIN_STEPS // steps_per_epoch) == 66
    assert recipe.epochs * steps_per_epoch >= VICTIM_MIN_STEPS
    base = default_recipe("cnn-small", 1575, seed=3)
    assert recipe.seed == 3 and recipe.patience == base.patience and recipe.lr == base.lr


def test_large_data_keeps_the_recipe_and_tiny_data_is_capped() -> None:
    assert victim_recipe("cnn-small", 10_000, epochs=None, seed=0).epochs == 20  # 141 steps/epoch
    assert victim_recipe("cnn-small", 60_000, epochs=None, seed=0).epochs == 8  # large: capped at 8
    assert victim_recipe("cnn-small", 100, epochs=None, seed=0).epochs == VICTIM_MAX_EPOCHS


def test_given_epochs_win() -> None:
    assert victim_recipe("cnn-small", 1575, epochs=3, seed=0).epochs == 3


@pytest.mark.slow
def test_the_default_badnets_attack_on_digits_is_learned(tmp_path) -> None:
    """What the user ran (issue 13): `poisonlab attack badnets --data digits` with every default.
    The victim learns the backdoor (ASR at least 90%, no low-ASR warning); before, 26–37%."""
    out = tmp_path / "bn"
    result = CliRunner().invoke(app, ["attack", "badnets", "--data", "digits", "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "attack.json").read_text())
    assert report["params"]["label_map"] == "all-to-all" and report["params"]["rate"] == 0.2
    victim = report["metrics"]["victim"]
    assert victim["asr"] >= 0.9 and victim["clean_accuracy"] >= 0.95
    assert "learned the backdoor poorly" not in result.output
