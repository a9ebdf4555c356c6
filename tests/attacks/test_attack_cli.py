"""`poisonlab attack` end to end on digits: files, ground truth, metrics, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from poisonlab.attacks import PoisonedDataset
from poisonlab.cli.attack_cmd import parse_color, parse_params, parse_window
from poisonlab.cli.main import app
from poisonlab.data import load_dataset
from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model, load_checkpoint, save_checkpoint
from poisonlab.workflows.filtering import attack_success

runner = CliRunner()
LC_FAST = ["--position", "bottom-right", "--offset", "0", "--limit", "200", "-q"]


def _invoke(*args: str):
    return runner.invoke(app, ["attack", *args])


def test_badnets_end_to_end(tmp_path) -> None:
    out = tmp_path / "bn"
    result = _invoke("badnets", "--target", "0", "--rate", "0.1", "--victim-epochs", "1",
                     "--limit", "300", "--out", str(out), "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "attack.json").read_text())
    assert report["params"]["label_map"] == "all-to-one" and report["params"]["rate"] == 0.1
    counts = report["counts"]
    assert counts["train_poisoned"] == counts["train_clean"] + counts["n_poison"]
    victim = report["metrics"]["victim"]
    assert 0.0 <= victim["asr"] <= 1.0 and 0.0 <= victim["clean_accuracy"] <= 1.0
    assert set(victim["per_class_asr"]) == {str(c) for c in range(1, 10)}
    assert victim["training"]["epochs_run"] == 1
    assert (out / "victim" / "model.safetensors").is_file()
    # the versions of every package that can change the numbers, as a scan records them
    assert {"poisonlab", "torch", "numpy", "scikit-learn", "python"} <= set(report["versions"])
    loaded = load_dataset(out / "poisoned.npz")
    assert len(loaded) == counts["train_poisoned"]
    with np.load(out / "poisoned.npz") as archive:
        assert int(archive["is_poison"].sum()) == counts["n_poison"]
        poisoned_ids = archive["ids"][archive["is_poison"]]
        assert all(
            i == f"{s}+badnets"
            for i, s in zip(poisoned_ids, archive["source_id"][archive["is_poison"]], strict=True)
        )
        assert np.all(archive["y"][archive["is_poison"]] == 0)
    # the file measures the attack again: its triggered test set, scored by the saved victim
    again = PoisonedDataset.load(out / "poisoned.npz")
    assert again.test_set is not None and len(again.test_set) == counts["triggered_test"]
    rate, _ = attack_success(load_checkpoint(out / "victim").model, again)
    assert rate == pytest.approx(victim["asr"], abs=1e-9)  # the same images, model and labels


def test_an_existing_output_is_not_overwritten(tmp_path) -> None:
    out = tmp_path / "bn"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _invoke("badnets", "--no-eval", "--out", str(out))
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "keep.txt").read_text() == "mine"
    forced = _invoke("badnets", "--no-eval", "--force", "--out", str(out), "-q")
    assert forced.exit_code == 2 and "keep.txt" in forced.output  # --force never deletes it
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    assert _invoke("badnets", "--no-eval", "--out", str(out), "-q").exit_code == 0  # empty: fine
    assert _invoke("badnets", "--no-eval", "--force", "--out", str(out), "-q").exit_code == 0
    assert (out / "poisoned.npz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["badnets", "--eps", "0.1"], "does not take --eps"),
        # the flags a user types, not the keywords behind them (it said --num-targets)
        (["badnets", "--targets", "3"], "does not take --targets (it takes: --label-map"),
        (["label-consistent", "--max-iters", "3"], "--arch, --surrogate-epochs"),
        (["label-consistent", "--max-iters", "3"], "; as --param key=value: batch_size)"),
        (["badnets", "--param", "beta_scaling=none"], "does not take --param beta_scaling"),
        (["badnets", "--rate", "0.1", "--count", "5"], "give only one of"),
        (["badnets", "--source", "1", "--target", "2", "--rate", "0.5"], "needs"),
        (["badnets", "--trigger", "star"], "trigger must be one of 'pattern'"),
        (["badnets", "--color", "red-ish", "--trigger", "square"], "--color"),
        (["badnets", "--param", "nope"], "expected key=value"),
        # trigger fit: the options as typed, the value, what fits (it said "trigger window 10×15")
        (
            ["badnets", "--trigger", "sticker"],
            "--window 10x15 (rows, cols; the sticker trigger's default) does not fit 8×8 "
            "images: expected at most (8, 8), or a corner --position",
        ),
        (
            ["badnets", "--window", "4x4"],
            "--window 4x4 applies to --position random only, not --position bottom-right "
            "(the pattern trigger's default)",
        ),
        (
            ["badnets", "--trigger", "square", "--offset", "6"],
            "--offset 6 puts the 4×4 trigger outside 8×8 images at --position bottom-right",
        ),
        (["nonesuch"], "unknown attack 'nonesuch'"),
    ],
)
def test_bad_values_are_one_red_line(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "x"
    result = _invoke(*args, "--no-eval", "--out", str(out))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()  # nothing written, no empty folder left behind


def test_label_consistent_with_a_given_surrogate_and_params(tmp_path) -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    save_checkpoint(model, tmp_path / "model")
    out = tmp_path / "lc"
    result = _invoke("label-consistent", "--model", str(tmp_path / "model"), "--target", "3",
                     "--count", "6", "--param", "eps=0.05", "--no-eval", *LC_FAST, "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "attack.json").read_text())
    assert report["params"]["eps"] == 0.05 and report["counts"]["n_poison"] == 6
    assert report["extras"]["surrogate"]["trained"] is False
    assert report["extras"]["pgd"]["linf_max"] <= 0.05 + 1e-6
    with np.load(out / "poisoned.npz") as archive:
        assert np.array_equal(archive["y"], archive["original_label"])  # clean labels


def test_label_consistent_refuses_a_checkpoint_for_other_data(tmp_path) -> None:
    save_checkpoint(build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0), tmp_path / "m")
    result = _invoke("label-consistent", "--model", str(tmp_path / "m"), "--no-eval", *LC_FAST,
                     "--out", str(tmp_path / "lc"))  # fmt: skip
    assert result.exit_code == 2 and "in 3 classes" in result.output


def test_help_teaches_with_examples() -> None:
    result = runner.invoke(app, ["attack", "--help"])
    assert result.exit_code == 0
    assert "poisonlab attack badnets" in result.output and "--target-rate" in result.output


def test_option_parsers() -> None:
    assert parse_color("245,255,0") == (245, 255, 0) == parse_color("yellow-green")
    assert parse_color("#f5ff00") == (245, 255, 0)
    assert parse_window("10x15") == (10, 15)
    assert parse_params(["eps=0.05", "window=[4,6]", "trigger=square", "label-map=one-to-one"]) == {
        "eps": 0.05,
        "window": [4, 6],
        "trigger": "square",
        "label_map": "one-to-one",
    }
    with pytest.raises(ConfigError, match="ROWSxCOLS"):
        parse_window("10")
