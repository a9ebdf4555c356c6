"""What a new user typed, replayed through the CLI: one red line, exit 2, nothing trained or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import poisonlab.workflows.scan
from poisonlab.cli.main import app
from poisonlab.data import save_npz
from tests.conftest import blobs_dataset

runner = CliRunner()


@pytest.fixture
def data(tmp_path):
    return save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "data.npz")


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if scan trains a model: every refusal below must come before training."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was trained before the input was refused")

    monkeypatch.setattr(poisonlab.workflows.scan, "train_default_model", refuse)


def one_red_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("defense", "param", "fragment"),
    [
        ("spectral-signatures", "eps=abc", "spectral-signatures eps must be a fraction in (0, 1)"),
        ("lgm-likelihood", "alpha=abc", "lgm-likelihood alpha must be a number in (0, 1)"),
        (
            "raw-clustering",
            "size_threshold=abc",
            "raw-clustering size_threshold must be a number in (0, 0.5]",
        ),
        ("raw-clustering", "n_components=2.5", "n_components must be an integer >= 1, got 2.5"),
        ("deep-features", "seed=true", "deep-features seed must be an integer, got True"),
        ("bnn", "samples=nan", "bnn samples must be an integer >= 1, got 'nan'"),
    ],
)
def test_param_values_of_the_wrong_type_are_one_line(
    tmp_path, data, no_training, defense, param, fragment
) -> None:
    """Issue: a non-number for these --param values ended in a TypeError traceback (exit 1)."""
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["scan", str(data), "-D", defense, "--param", f"{defense}.{param}", "-o", str(out)]
    )
    line = one_red_line(result)
    assert fragment in line and "got" in line
    assert not out.exists()


def test_a_skipped_defense_still_has_its_parameters_checked(tmp_path, data, no_training) -> None:
    """deep-features would be skipped (no --holdout); its bad parameter is reported anyway."""
    result = runner.invoke(
        app,
        [
            "scan", str(data), "-D", "deep-features,spectral-signatures",
            "--param", "deep-features.fusion=mean", "-o", str(tmp_path / "out"),
        ],
    )  # fmt: skip
    assert "fusion must be one of 'claimed', 'max', got 'mean'" in one_red_line(result)


@pytest.mark.parametrize(
    ("threshold", "fragment"),
    [
        ("value:nan", "value must be a finite number, got nan"),
        ("contamination:1.5", "contamination must be a number in (0, 1), got 1.5"),
        ("fpr:2", "fpr must be a number in (0, 1), got 2"),
        ("top:3", "use verdict (or verdict:A with A in (0, 1), the family-wise level), paper"),
    ],
)
def test_thresholds_are_checked_up_front_with_their_range(
    tmp_path, data, no_training, threshold, fragment
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["scan", str(data), "-D", "spectral-signatures", "-t", threshold, "-o", str(out)]
    )
    assert fragment in one_red_line(result)
    assert not out.exists()


def test_target_fpr_without_holdout_is_refused_before_training(tmp_path, data, no_training):
    """Issue: fpr: without --holdout was refused only after a model had been trained."""
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["scan", str(data), "-D", "spectral-signatures", "-t", "fpr:0.05", "-o", str(out)]
    )
    line = one_red_line(result)
    assert "--threshold fpr:0.05" in line and "--holdout" in line
    assert not out.exists()


def test_the_library_refuses_target_fpr_without_holdout_before_training(no_training) -> None:
    from poisonlab.errors import ConfigError

    with pytest.raises(ConfigError, match="clean held-out set"):
        poisonlab.workflows.scan.scan(
            blobs_dataset(), defenses="spectral-signatures", threshold="fpr:0.1"
        )


def test_attack_output_over_its_own_input_is_refused(tmp_path):
    """`attack --data run/poisoned.npz --out run --force` would replace the folder that holds
    its input (losing the earlier ground truth); refused before any work, input untouched."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = save_npz(blobs_dataset(n_per_class=20, seed=0), run_dir / "poisoned.npz")
    before = data.read_bytes()
    args = ["attack", "badnets", "--data", str(data), "--out", str(run_dir), "--force"]
    line = one_red_line(runner.invoke(app, args))
    assert "overlaps the input" in line and "choose another folder" in line
    assert data.read_bytes() == before and sorted(run_dir.iterdir()) == [data]


def test_table_of_a_file_that_is_not_a_store_is_one_line(tmp_path):
    """Issue: `poisonlab table data.npz` printed a sqlite3.DatabaseError traceback."""
    npz = save_npz(blobs_dataset(n_per_class=5, seed=0), tmp_path / "data.npz")
    line = one_red_line(runner.invoke(app, ["table", str(npz)]))
    assert "data.npz is not a poisonlab results store" in line


@pytest.mark.parametrize("spec", ["", "npz:"])
@pytest.mark.parametrize("command", ["scan", "attack"])
def test_an_empty_data_spec_is_one_line(tmp_path, monkeypatch, command, spec):
    """Issue: `poisonlab scan "$DATA"` with DATA unset read the current folder, and said its --out
    overlapped the input "." instead of naming the empty argument."""
    monkeypatch.chdir(tmp_path)
    args = ["scan", spec, "-D", "spectral-signatures"] if command == "scan" else ["attack"]
    args += ["badnets", "--data", spec] if command == "attack" else []
    line = one_red_line(runner.invoke(app, [*args, "--out", "out"]))
    assert "names no path" in line if spec else "empty data name or path ''" in line
    assert not (tmp_path / "out").exists()


def test_run_of_a_folder_is_one_line(tmp_path):
    """Issue: `poisonlab run experiments` said "config file experiments not found"."""
    line = one_red_line(runner.invoke(app, ["run", str(tmp_path)]))
    assert "is a folder; expected a TOML file" in line


def test_a_set_without_equals_is_one_readable_line(tmp_path):
    """Issue: `run CONFIG --set foo` said "--set expect section.key=value" (its Python name,
    `overrides` expect, turned into the flag)."""
    config = tmp_path / "c.toml"
    config.write_text('kind = "backdoor"\n')
    line = one_red_line(runner.invoke(app, ["run", str(config), "--set", "foo", "--dry-run"]))
    assert "--set item 'foo': expected section.key=value" in line


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--executor", "foo"], "unknown executor 'foo'; choose one of: local, ray"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--address", "auto"], "--address needs the ray --executor"),
    ],
)
def test_run_dry_run_checks_the_executor_options(tmp_path, option, message):
    """Issue: `run CONFIG --executor foo --dry-run` listed the cells as if they would run; only
    the real run refused the executor."""
    config = Path(__file__).parents[2] / "experiments" / "ci" / "schulth2022-table1.toml"
    args = ["run", str(config), "--runs", str(tmp_path / "runs"), "--dry-run"]
    assert runner.invoke(app, args).exit_code == 0  # the config itself plans
    assert message in one_red_line(runner.invoke(app, [*args, *option]))


@pytest.mark.parametrize("command", [["train"], ["attack", "badnets"]])
@pytest.mark.parametrize("limit", ["0", "-5"])
def test_a_limit_below_one_is_refused_by_name(tmp_path, command, limit):
    """Issue: --limit 0 said the data "has no images", --limit -5 "split fractions must be >= 0
    and sum to 1, got (-0.036, 1.036)": neither named the option."""
    out = tmp_path / "out"
    line = one_red_line(runner.invoke(app, [*command, "--limit", limit, "-o", str(out)]))
    assert f"--limit {limit}: expected a whole number of training images >= 1" in line
    assert not out.exists()


def test_a_limit_that_keeps_no_image_says_so(tmp_path):
    """Each class keeps its share of --limit, rounded: 3 images over 10 digit classes keep none,
    which once read as if the data set itself had no images."""
    line = one_red_line(runner.invoke(app, ["train", "--limit", "3", "-o", str(tmp_path / "o")]))
    assert "the training part of 'digits' cut to limit=3 of its 1258 images" in line


def test_train_without_test_images_writes_valid_json(tmp_path):
    """--limit 9 on digits leaves no test image: train.json held NaN (invalid JSON) and the
    table read "nan%"; now null and "-"."""
    import json

    out = tmp_path / "m"
    result = runner.invoke(app, ["train", "--limit", "9", "--epochs", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "nan" not in result.output
    summary = json.loads((out / "train.json").read_text(), parse_constant=pytest.fail)
    assert summary["test_accuracy"] is None


def test_victim_epochs_below_one_is_refused_by_name(tmp_path):
    """Issue: feature-collision read --victim-epochs 0 as its protocol's default (`or 100`) and
    trained 100 epochs; badnets refused it as "train epochs" after poisoning."""
    out = tmp_path / "out"
    args = ["attack", "badnets", "--victim-epochs", "0", "-o", str(out)]
    line = one_red_line(runner.invoke(app, args))
    assert "--victim-epochs 0: expected a whole number of epochs >= 1" in line
    assert not out.exists()


def test_an_unknown_layer_is_refused_before_training(tmp_path, data, no_training):
    """Issue: --param spectral-signatures.layer=nope trained the model first, then skipped the
    defense (or failed with "no defense could run"): minutes of training on a large set."""
    out = tmp_path / "out"
    args = ["scan", str(data), "-D", "spectral-signatures,raw-clustering",
            "--param", "spectral-signatures.layer=nope", "-o", str(out)]  # fmt: skip
    line = one_red_line(runner.invoke(app, args))
    assert "spectral-signatures layer: unknown layer 'nope'; layers look like: body" in line
    assert not out.exists()


def test_an_unknown_layer_of_a_given_model_is_refused_before_any_work(no_training):
    from poisonlab.errors import ConfigError
    from poisonlab.models import ModelConfig, build_model

    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=8), seed=0)
    with pytest.raises(ConfigError, match=r"activation-clustering layer: unknown layer 'body\.x'"):
        poisonlab.workflows.scan.scan(
            blobs_dataset(), defenses="activation-clustering", model=model,
            params={"activation-clustering": {"layer": "body.x"}},
        )  # fmt: skip


def test_a_class_out_of_range_names_the_option(tmp_path, data, no_training):
    """It read "class 99 does not exist (0..2)", without saying which option gave it."""
    args = ["scan", str(data), "-D", "spectral-signatures", "--classes", "1,99",
            "-o", str(tmp_path / "out")]  # fmt: skip
    line = one_red_line(runner.invoke(app, args))
    assert "--classes: class 99 does not exist in data set 'data' (0..2)" in line


def test_a_missing_holdout_is_named_as_the_holdout(tmp_path, data, no_training):
    """It read "missing.npz: no such file or directory", as a missing DATA reads."""
    args = ["scan", str(data), "-D", "all", "--holdout", str(tmp_path / "missing.npz"),
            "-o", str(tmp_path / "out")]  # fmt: skip
    line = one_red_line(runner.invoke(app, args))
    assert line.startswith(f"error: --holdout {tmp_path / 'missing.npz'}: no such file")


def test_a_limit_that_leaves_no_test_image_is_refused_before_training(tmp_path, monkeypatch):
    """--limit 15 on digits keeps 16 training images and no test image (each class keeps its
    share, rounded): the victim trained, then the command failed with "cannot compute MASR: no
    non-target class in the triggered set"."""
    import poisonlab.workflows.attack_run

    def refuse(*args, **kwargs):
        raise AssertionError("a victim was trained before the input was refused")

    monkeypatch.setattr(poisonlab.workflows.attack_run, "train_victim", refuse)
    out = tmp_path / "out"
    args = ["attack", "badnets", "--limit", "15", "--count", "3", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.output.splitlines()[-1]  # after the warning about 1-2 images per class
    assert line.startswith("error: the test part of 'digits' has no images (--limit 15: each")
    assert "give a larger --limit, or --no-eval to only poison" in line
    assert not out.exists()


def class_folder(root: Path, names: tuple[str, ...], size: int = 8, mode: str = "L") -> Path:
    """An image folder: three noisy png images per class, one subfolder per name."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    channels = (size, size) if mode == "L" else (size, size, 3)
    for name in names:
        (root / name).mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 256, size=channels, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / name / f"{k}.png")
    return root


def test_a_holdout_folder_with_other_class_names_is_refused(tmp_path, no_training):
    """Issue: a held-out folder with one class folder named differently (hors for horse) ran: the
    classes are matched by number, and its sorted folders gave each number another class."""
    data = class_folder(tmp_path / "data", ("cat", "dog", "horse"))
    held = class_folder(tmp_path / "held", ("cat", "dog", "hors"))
    args = ["scan", str(data), "--holdout", str(held), "-o", str(tmp_path / "out")]
    line = one_red_line(runner.invoke(app, args))
    assert "held-out set 'held' names its classes differently from data set 'data'" in line
    assert "class 2 is 'hors' there and 'horse' here" in line and "same class names" in line
    assert not (tmp_path / "out").exists()


def test_a_holdout_folder_missing_a_class_names_it(tmp_path, no_training):
    """It said "(2 classes) does not match data set 'data' (3 classes)" without saying which."""
    data = class_folder(tmp_path / "data", ("cat", "dog", "horse"))
    held = class_folder(tmp_path / "held", ("cat", "horse"))
    args = ["scan", str(data), "--holdout", str(held), "-o", str(tmp_path / "out")]
    line = one_red_line(runner.invoke(app, args))
    assert "(2 classes) does not match data set 'data' (3 classes) (it has no class 'dog')" in line


@pytest.mark.parametrize(
    ("size", "mode", "hint"),
    [(10, "L", "load both at one size: --image-size HxW"), (8, "RGB", "the data is grayscale")],
)
def test_a_holdout_of_another_shape_says_what_to_do(tmp_path, no_training, size, mode, hint):
    """A held-out folder whose images are another size (each folder takes its first image's) or
    in colour: the message gave the two shapes only."""
    data = class_folder(tmp_path / "data", ("cat", "dog"))
    held = class_folder(tmp_path / "held", ("cat", "dog"), size=size, mode=mode)
    args = ["scan", str(data), "--holdout", str(held), "-o", str(tmp_path / "out")]
    line = one_red_line(runner.invoke(app, args))
    assert "does not match data set 'data'" in line and hint in line


def test_a_class_name_for_classes_says_where_the_numbers_are(tmp_path, no_training):
    """--classes horse on a folder of named classes read "expected comma-separated class
    numbers", without saying which number a folder has."""
    data = class_folder(tmp_path / "data", ("cat", "dog", "horse"))
    args = ["scan", str(data), "--classes", "horse", "-o", str(tmp_path / "out")]
    line = one_red_line(runner.invoke(app, args))
    assert "--classes 'horse': expected comma-separated class numbers, the class column of" in line
    assert "`poisonlab data info DATA` (an image folder numbers its class folders 0, 1" in line
