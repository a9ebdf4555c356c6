"""--image-size: the commands' way to choose the size of an image folder's (or GTSRB's) images.

Issue: a folder of mixed sizes was resized to its first image's size with a warning that told
Python users to pass ``size``; the command line had no way to choose it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.data import save_npz
from poisonlab.models import ModelConfig, build_model, save_checkpoint
from tests.conftest import blobs_dataset

runner = CliRunner()


def mixed_folder(root: Path, per_class: int = 12) -> Path:
    """Two classes of noisy grayscale png images, alternately 10×6 and 12×12 pixels (w×h)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            width, height = (10, 6) if k % 2 == 0 else (12, 12)
            pixels = rng.integers(0, 60, size=(height, width)) + 120 * label
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(root / name / f"{k:02d}.png")
    return root


def warnings_in(output: str) -> list[str]:
    """The lines the command logged at WARNING (its log handler writes to its stderr)."""
    return [line for line in output.splitlines() if line.startswith("WARNING")]


def test_data_info_with_image_size_gives_that_size_and_no_warning(tmp_path):
    folder = mixed_folder(tmp_path / "pets")
    result = runner.invoke(app, ["data", "info", str(folder), "--image-size", "8x8"])
    assert result.exit_code == 0, result.output
    assert "1×8×8" in result.output and warnings_in(result.output) == []
    result = runner.invoke(app, ["data", "info", str(folder), "--image-size", "7"])
    assert result.exit_code == 0 and "1×7×7" in result.output  # one number: a square
    assert warnings_in(result.output) == []
    result = runner.invoke(app, ["data", "info", str(folder)])
    assert result.exit_code == 0 and "1×6×10" in result.output  # the first image's size
    (warning,) = warnings_in(result.output)
    assert "12 of 24 images are not 6×10" in warning and "pass --image-size HxW" in warning


def test_scan_resizes_data_and_holdout_to_the_image_size(tmp_path):
    data = mixed_folder(tmp_path / "data")
    held = mixed_folder(tmp_path / "held", per_class=6)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 2, feature_dim=8), seed=0)
    checkpoint = save_checkpoint(model, tmp_path / "model")
    out = tmp_path / "scan"
    args = ["scan", str(data), "-D", "dnn-uncertainty", "--model", str(checkpoint)]
    args += ["--holdout", str(held), "--image-size", "8x8", "-o", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # the 8×8 model fits the resized images
    assert "resized" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["image_shape"] == [1, 8, 8]
    assert summary["holdout"]["size"] == 12
    from poisonlab.reports.scan_report import recorded_data

    again, _ = recorded_data(out)  # `poisonlab report` reads the data again, as scanned
    assert again is not None and again.shape == (1, 8, 8)


@pytest.mark.parametrize(
    "value", ["0x5", "abc", "-3", "8x", "8x8x8", "0", "x8", "8.5", "3232", "32x1025"]
)
def test_bad_image_sizes_are_one_line_naming_the_option(tmp_path, value):
    folder = mixed_folder(tmp_path / "pets", per_class=2)
    for command in (["data", "info", str(folder)], ["scan", str(folder), "-o", "out"]):
        result = runner.invoke(app, [*command, f"--image-size={value}"])
        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.split())
        assert f"--image-size {value!r}: expected HEIGHTxWIDTH in whole pixels >= 1" in flat
        assert "Traceback" not in result.output


def test_image_size_is_refused_for_data_it_does_not_resize(tmp_path):
    data = save_npz(blobs_dataset(n_per_class=4, seed=0), tmp_path / "data.npz")
    cases = [
        (["scan", str(data), "-o", str(tmp_path / "out")], f"npz data ({data},"),
        (["train", "--data", "digits", "-o", str(tmp_path / "out")], "digits data (--data digits,"),
        (["attack", "badnets", "--data", str(data), "-o", str(tmp_path / "out")], "npz data"),
        (["data", "info", str(data)], "npz data"),
    ]
    for command, named in cases:
        result = runner.invoke(app, [*command, "--image-size", "8x8"])
        assert result.exit_code == 2, (command, result.output)
        flat = " ".join(result.output.split())
        assert "--image-size 8x8: only image folders and GTSRB are resized, not " in flat
        assert named in flat and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_train_and_attack_read_the_folder_at_the_image_size(tmp_path):
    folder = mixed_folder(tmp_path / "pets")
    out = tmp_path / "model"
    args = ["train", "--data", str(folder), "--image-size", "8", "--epochs", "1", "-o", str(out)]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "model.json").read_text())["model"]
    assert (config["height"], config["width"]) == (8, 8)
    attack = ["attack", "badnets", "--data", str(folder), "--image-size", "8x8", "--no-eval"]
    result = runner.invoke(app, [*attack, "--count", "2", "-o", str(tmp_path / "bn"), "-q"])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "bn" / "poisoned.npz") as archive:
        assert archive["x"].shape[1:3] == (8, 8)


def test_attack_threads_follow_the_image_size_and_builtin_shapes(tmp_path, monkeypatch):
    """The automatic thread count of `attack` knew only a --model's input and digits: an image
    folder at --image-size 8x8 ran on every core, fashion-mnist's 28×28 was 'unknown work'."""
    from poisonlab import runtime
    from poisonlab.cli import attack_cmd

    shapes = []
    real = attack_cmd.use_threads

    def recording(threads, image_shape=None):
        shapes.append(image_shape)
        return real(threads, image_shape=image_shape)

    monkeypatch.setattr(attack_cmd, "use_threads", recording)
    folder = mixed_folder(tmp_path / "pets", per_class=4)
    for size in ("8x8", "32", "12x12"):
        args = ["attack", "badnets", "--data", str(folder), "--image-size", size, "--no-eval"]
        result = runner.invoke(app, [*args, "--count", "2", "-o", str(tmp_path / size), "-q"])
        assert result.exit_code == 0, result.output
    # 12x12 is small in gray (144 values) but not in colour (432): unknown until loaded
    assert shapes == [(8, 8), (32, 32), None]
    cores = runtime.cpu_count()
    assert [runtime.auto_threads(shape) for shape in shapes] == [1, cores, cores]
    assert attack_cmd._image_shape(None, "fashion-mnist", None) == (1, 28, 28)
    assert attack_cmd._image_shape(None, "digits", None) == (1, 8, 8)
    assert attack_cmd._image_shape(None, str(folder), None) is None  # known once loaded
