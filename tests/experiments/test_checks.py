"""`poisonlab run --dry-run` plans every cell and reports every problem before anything runs."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.errors import ConfigError
from poisonlab.experiments.checks import ConfigProblems
from poisonlab.experiments.config import load_config

cli = CliRunner()

GOOD = """
kind = "backdoor"
[data]
source = "digits"
limit = 300
[attack]
name = "badnets"
rate = [0.0, 0.1]
[train]
epochs = 1
[[defenses]]
name = "spectral-signatures"
"""

# What the user tried (issue: each of these passed --dry-run, then failed cell by cell).
BROKEN = """
kind = "backdoor"
[data]
source = "{missing}"
limit = "300"
[attack]
name = "badnets"
rate = [0.1, 1.5]
[task]
tabel1 = true
[train]
epochs = 2.5
[[defenses]]
name = "spectral-signatures"
eps = "abc"
"""


def dry_run(path, runs):
    return cli.invoke(app, ["run", str(path), "--runs", str(runs), "--dry-run"])


def test_a_dry_run_reports_every_problem_and_runs_nothing(write_config, tmp_path):
    missing = tmp_path / "nowhere" / "train.npz"
    path = write_config(BROKEN.format(missing=missing))
    runs = tmp_path / "runs"
    result = dry_run(path, runs)
    assert result.exit_code == 2 and "Traceback" not in result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    expected = [
        "exp.toml: 6 problems:",
        "[data] limit must be an integer >= 10 or None, got '300'",
        "[train] epochs must be an integer >= 1, got 2.5",
        "[[defenses]] spectral-signatures eps must be a fraction in (0, 1)",
        "[task] unknown key 'tabel1'; allowed: clean_model",
        "badnets rate must be a number in (0, 1) or None, got 1.5 (cell #1 rate=1.5)",
        f"[data] source: {missing}: no such file or directory",
    ]
    for fragment in expected:
        assert fragment in output, (fragment, output)
    assert not runs.exists()  # nothing was created, let alone run


def test_a_typo_in_data_and_a_missing_file_are_found_by_a_real_run_too(write_config, tmp_path):
    path = write_config(GOOD.replace('source = "digits"', 'sorce = "digits"'))
    runs = tmp_path / "runs"
    result = cli.invoke(app, ["run", str(path), "--runs", str(runs), "-q"])
    assert result.exit_code == 2
    assert "[data] unknown key 'sorce'; allowed: source, limit, holdout, test, seed" in " ".join(
        result.output.split()
    )
    assert not runs.exists()
    missing = write_config(GOOD.replace('"digits"', '"npz:absent.npz"'), name="missing.toml")
    result = cli.invoke(app, ["run", str(missing), "--runs", str(runs), "-q"])
    assert result.exit_code == 2 and "absent.npz: no such file or directory" in result.output
    assert not runs.exists()


def test_a_valid_config_dry_runs_and_lists_its_cells(write_config, tmp_path):
    result = dry_run(write_config(GOOD), tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "2 of 2 cells would run" in result.output


def test_the_same_problem_in_several_cells_is_reported_once(write_config):
    text = GOOD.replace("rate = [0.0, 0.1]", 'rate = [0.1, 0.2]\nmode = ["insert"]\ncount = 3')
    with pytest.raises(ConfigProblems) as info:
        load_config(write_config(text))
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith("[attack] badnets mode must be one of 'append', 'replace'")
    assert problems[0].endswith("(all 2 cells)")


def test_config_problems_survive_pickling_and_copying():
    """A worker process sends it pickled; the default (message as the one argument) failed."""
    problems = ConfigProblems("run.toml", ["[attack] rate must be in [0, 1]", "seeds: empty"])
    for copied in (pickle.loads(pickle.dumps(problems)), copy.copy(problems)):
        assert type(copied) is ConfigProblems
        assert (copied.where, copied.problems) == (problems.where, problems.problems)
        assert str(copied) == str(problems)


def test_a_cross_parameter_attack_error_names_the_section(write_config):
    text = GOOD.replace("rate = [0.0, 0.1]", "rate = 0.1\ncount = 3")
    with pytest.raises(ConfigError, match=r"\[attack\] badnets: give only one of rate"):
        load_config(write_config(text))


def test_load_config_leaves_the_data_check_to_runs(write_config, tmp_path):
    """Parsing a config (tables, tests) does not touch the file system; runs and dry runs do."""
    path = write_config(GOOD.replace('"digits"', f'"{tmp_path / "later.npz"}"'))
    assert load_config(path).data["source"].endswith("later.npz")
    with pytest.raises(ConfigError, match=r"later\.npz: no such file"):
        load_config(path, check_data=True)


def test_a_missing_relative_source_says_where_it_was_looked_for(write_config, tmp_path):
    """A source written relative to the config file was 'no such file', with nothing saying that
    relative paths are read from the current folder."""
    path = write_config(GOOD.replace('"digits"', '"../data/train.npz"'))
    with pytest.raises(ConfigError) as info:
        load_config(path, check_data=True)
    assert "../data/train.npz: no such file or directory" in str(info.value)
    assert f"(a relative path is read from the current folder, {Path.cwd()})" in str(info.value)
    absolute = write_config(GOOD.replace('"digits"', f'"{tmp_path / "later.npz"}"'))
    with pytest.raises(ConfigError) as info:
        load_config(absolute, check_data=True)
    assert "relative path" not in str(info.value)


def test_a_defense_threshold_is_checked_with_its_range(write_config):
    text = GOOD + 'threshold = "value:nan"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    assert "[[defenses]] spectral-signatures threshold 'value:nan': value must be a finite" in str(
        info.value
    )


def test_data_on_a_remote_ray_cluster_is_not_looked_up_here(write_config, tmp_path):
    """A remote cluster reads its own files: the driver checks everything else."""
    path = write_config(GOOD.replace('"digits"', '"npz:/cluster/only/train.npz"'))
    remote = ["--executor", "ray", "--address", "ray://head:10001", "--dry-run"]
    result = cli.invoke(app, ["run", str(path), "--runs", str(tmp_path / "runs"), *remote])
    assert result.exit_code == 0, result.output
    local = dry_run(path, tmp_path / "runs")
    assert local.exit_code == 2 and "/cluster/only/train.npz" in local.output


STICKER = GOOD.replace(
    "rate = [0.0, 0.1]", 'rate = [0.0, 0.1]\ntrigger = "sticker"\nsize = {size}\n{position}'
)


def test_a_trigger_that_does_not_fit_the_images_fails_the_dry_run_as_the_run_would(
    write_config, tmp_path
):
    """Issue: a sticker larger than the data's 8×8 images passed --dry-run; the run failed once it
    reached the attack. The dry run now reads the images' size (digits: built in) and gives the
    run's own message, naming the config file and the field."""
    from poisonlab.experiments.tasks_backdoor import plan_backdoor
    from poisonlab.experiments.tasks_base import CellSpec

    corner = 'position = "bottom-right"'
    path = write_config(STICKER.format(size=9, position=corner))
    result = dry_run(path, tmp_path / "runs")
    assert result.exit_code == 2 and not (tmp_path / "runs").exists()
    message = (
        "[attack] badnets: size = 9 makes a 9×9 trigger, larger than 8×8 images: "
        "expected a size in [1, 8] (all 2 cells)"
    )
    assert " ".join(result.output.split()) == f"error: exp.toml: {message}"
    attack = {"name": "badnets", "rate": 0.1, "trigger": "sticker", "size": 9}
    plan = plan_backdoor(CellSpec("x", "backdoor", {"attack": {**attack, "position": "top-left"}}))
    with pytest.raises(ConfigError) as run:  # what run_backdoor raises once the data is loaded
        plan.check_image_shape((1, 8, 8))
    assert f"{run.value} (all 2 cells)" == message
    fitting = dry_run(write_config(STICKER.format(size=3, position=corner)), tmp_path / "runs")
    assert fitting.exit_code == 0, fitting.output
    assert "2 of 2 cells would run" in fitting.output
    # the sticker's default: random inside a 10×15 window, wider than the images
    window = dry_run(write_config(STICKER.format(size=3, position="")), tmp_path / "runs")
    assert window.exit_code == 2
    assert "exp.toml: [attack] badnets: window = [[10, 15]] (rows, cols; the sticker trigger's" in (
        " ".join(window.output.split())
    )


def test_the_trigger_is_checked_per_cell_against_an_image_folder(write_config, tmp_path):
    """An image folder's size comes from its images' headers; only the cell that does not fit
    is named."""
    from tests.data.conftest import write_image

    for label in ("a", "b"):
        for k in range(6):
            write_image(tmp_path / "pets" / label / f"{k}.png", (12, 6), value=40 * k)
    text = STICKER.format(size="[5, 7]", position='position = "top-left"')
    text = text.replace('source = "digits"\nlimit = 300', f'source = "{tmp_path / "pets"}"')
    with pytest.raises(ConfigProblems) as info:
        load_config(write_config(text), check_data=True)
    assert info.value.problems == (
        "[attack] badnets: size = 7 makes a 7×7 trigger, larger than 6×12 images: "
        "expected a size in [1, 6] (cells #1 rate=0.0 size=7; #3 rate=0.1 size=7)",
    )
