"""`poisonlab train`: the options chosen are the ones the saved model was built and trained with."""

from __future__ import annotations

from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.models import load_checkpoint

runner = CliRunner()


def test_the_options_reach_the_model_and_its_recipe(tmp_path):
    out = tmp_path / "lgm"
    args = ["train", "--limit", "200", "--model", "lgm-net", "--loss", "lgm", "--epochs", "1",
            "--batch-size", "32", "--lr", "0.01", "--optimizer", "sgd", "--patience", "4",
            "--seed", "3", "-o", str(out), "-q"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = load_checkpoint(out)
    assert (saved.model.config.arch, saved.model.config.head) == ("lgm-net", "lgm")
    recipe = saved.extra["recipe"]
    assert (recipe["epochs"], recipe["batch_size"], recipe["lr"]) == (1, 32, 0.01)
    assert (recipe["optimizer"], recipe["patience"], recipe["seed"]) == ("sgd", 4, 3)
    assert saved.extra["training"]["epochs_run"] == 1
