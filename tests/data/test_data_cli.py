"""`poisonlab data info` end to end with CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from poisonlab.cli.main import app
from tests.data.conftest import mnist_folder

runner = CliRunner()


def test_info_digits() -> None:
    result = runner.invoke(app, ["data", "info", "digits"])
    assert result.exit_code == 0, result.output
    for text in ("digits", "1797", "1×8×8", "samples per class", "178"):
        assert text in result.stdout


def test_info_test_part_of_a_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "info", str(mnist_folder(tmp_path)), "--part", "test"])
    assert result.exit_code == 0, result.output
    assert "mnist (test)" in result.stdout and "1×28×28" in result.stdout


def test_bad_path_is_one_red_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "no such file or directory" in result.stderr
    assert "Traceback" not in result.output


def test_single_part_source_refuses_test() -> None:
    result = runner.invoke(app, ["data", "info", "digits", "--part", "test"])
    assert result.exit_code == 2 and "no separate test part" in result.stderr


def test_the_refusal_says_what_to_do_on_the_command_line() -> None:
    """It named a Python function (split it with poisonlab.data.split_dataset) to a user of the
    command line, whose commands split held-out and test images themselves."""
    result = runner.invoke(app, ["data", "info", "digits", "--part", "test"])
    error = " ".join(result.stderr.split())
    assert "--part test: digits has no separate test part" in error
    assert "use --part train" in error and "split_dataset" not in error


def test_a_source_without_parts_is_not_called_a_train_part(tmp_path: Path) -> None:
    """The title named --part's default: "mnist (train)" for the single file
    t10k-images-idx3-ubyte, which holds MNIST's test images; a folder keeps its part."""
    one_file = mnist_folder(tmp_path) / "t10k-images-idx3-ubyte.gz"
    result = runner.invoke(app, ["data", "info", str(one_file)], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "(train)" not in result.stdout and "5" in result.stdout
    result = runner.invoke(app, ["data", "info", str(tmp_path)], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "(train)" in result.stdout
