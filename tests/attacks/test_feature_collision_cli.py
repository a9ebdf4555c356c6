"""`poisonlab attack feature-collision` end to end on digits: files, ground truth, success rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from poisonlab.attacks import PoisonedDataset
from poisonlab.cli.main import app
from poisonlab.models import ModelConfig, build_model, save_checkpoint

runner = CliRunner()
FAST = ["--max-iters", "15", "--limit", "200", "-q"]


def _invoke(*args: str):
    return runner.invoke(app, ["attack", "feature-collision", *args])


def test_poisons_and_transfer_success_are_written(tmp_path) -> None:
    checkpoint = save_checkpoint(build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0),
                                 tmp_path / "cnn")  # fmt: skip
    out = tmp_path / "fc"
    result = _invoke("--model", str(checkpoint), "--targets", "3", "--bases-per-target", "2",
                     "--beta0", "6e-5", "--watermark", "0.1", "--victim-epochs", "3",
                     "--out", str(out), *FAST)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "attack.json").read_text())
    params = report["params"]
    assert (params["num_targets"], params["bases_per_target"], params["max_iter"]) == (3, 2, 15)
    assert params["beta0"] == 6e-5 and params["watermark"] == 0.1 and params["layer"] == "body"
    victim = report["metrics"]["victim (transfer)"]
    assert victim["success_rate"]["n"] == 3 and 0.0 <= victim["asr"] <= 1.0
    assert victim["params"]["epochs"] == 3 and len(victim["predicted"]) == 3
    assert report["counts"]["n_poison"] == 6 and len(report["extras"]["poison_target"]) == 6
    with np.load(out / "poisoned.npz") as archive:
        is_poison = archive["is_poison"]
        assert int(is_poison.sum()) == 6
        assert np.array_equal(archive["y"], archive["original_label"])  # clean label
        assert all(i.endswith("+feature-collision") for i in archive["ids"][is_poison])
    # the file holds what measures the attack again: the targets and which poison aims at which
    again = PoisonedDataset.load(out / "poisoned.npz")
    assert again.targets is not None and again.target_labels is not None
    assert again.target_labels.tolist() == victim["target_labels"]
    assert again.extras["poison_target"] == report["extras"]["poison_target"]


def test_without_a_model_one_is_trained_and_saved(tmp_path) -> None:
    out = tmp_path / "fc"
    result = _invoke("--targets", "2", "--no-eval", "--out", str(out), *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "attack.json").read_text())
    # recorded relative to the attack folder (it is written in a temporary folder, then renamed)
    assert report["model"] == "model" and (out / "model" / "model.json").is_file()
    assert report["metrics"] == {} and report["counts"]["n_poison"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "partial"], "--protocol 'partial'"),
        (["--eps", "0.1"], "does not take --eps"),
        (["--watermark", "1.5"], "watermark"),
    ],
)
def test_bad_options_are_one_red_line(tmp_path, args: list[str], message: str) -> None:
    out = tmp_path / "x"
    result = _invoke(*args, "--no-eval", "--out", str(out))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()
