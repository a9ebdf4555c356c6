"""Odd data, as a new user met it: refused when impossible, warned about when doubtful, before
any training; and labels that are not class indices refused before they allocate anything."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import poisonlab.workflows.scan
from poisonlab.cli.main import app
from poisonlab.data import ImageDataset, load_dataset
from poisonlab.data.checks import MIN_PER_CLASS, check_label_range, check_training_data
from poisonlab.data.prepare import prepare_splits
from poisonlab.errors import DataError
from tests.data.conftest import write_image

runner = CliRunner()


def write_npz(path: Path, labels, *, class_names=None, n: int | None = None) -> Path:
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(len(labels), 8, 8), dtype=np.uint8)
    arrays = {"x": x, "y": labels}
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)
    np.savez(path, **arrays)
    return path


def info(path: Path):
    return runner.invoke(app, ["data", "info", str(path)])


def one_red_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())


# -- labels that eat memory ---------------------------------------------------------------


@pytest.mark.parametrize("stray", [10**9, 100_000])
def test_one_huge_label_is_refused_at_once(tmp_path, stray: int) -> None:
    """Issue: one label of 10⁹ in a 300-image .npz grew `data info` to 22 GB (146 s); a label
    of 100,000 'succeeded' with 100,001 classes."""
    labels = np.arange(300) % 10
    labels[17] = stray
    started = time.perf_counter()
    message = one_red_line(info(write_npz(tmp_path / "bad.npz", labels)))
    assert time.perf_counter() - started < 10  # nothing per class was allocated
    assert f"largest label is {stray}" in message and "only 11 distinct labels" in message
    assert "class_names" in message


def test_sparse_classes_declared_by_name_are_accepted(tmp_path) -> None:
    names = [f"c{k}" for k in range(60)]
    data = load_dataset(write_npz(tmp_path / "ok.npz", [0, 59] * 20, class_names=names))
    assert data.num_classes == 60 and data.class_counts()[59] == 20


def test_a_few_unused_indices_are_fine(tmp_path) -> None:
    labels = np.array([0, 1, 2, 9] * 20)  # classes 3..8 unused: a subset of a 10-class set
    assert load_dataset(write_npz(tmp_path / "subset.npz", labels)).num_classes == 10
    assert check_label_range(labels, "x") == 10
    with pytest.raises(DataError, match="largest label is 40"):
        check_label_range(np.array([0, 1, 2, 40]), "x")


def test_the_dataset_type_never_makes_names_for_an_unchecked_number_of_classes() -> None:
    images, labels = torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])
    started = time.perf_counter()
    with pytest.raises(DataError, match="must be declared by name"):
        ImageDataset(images, labels, 10**9)
    assert time.perf_counter() - started < 1
    with pytest.raises(DataError, match="num_classes must be an integer"):
        ImageDataset(images, labels, 2.0)  # type: ignore[arg-type]


# -- odd data: errors for the impossible, warnings for the doubtful ------------------------


def test_data_info_warns_about_what_training_would_meet(tmp_path) -> None:
    five = info(write_npz(tmp_path / "five.npz", [0, 1, 0, 1, 0]))
    assert five.exit_code == 0
    assert "fewer than 10 images" in " ".join(five.output.split())
    assert five.output.startswith("WARNING  data set 'five'")  # the style train and scan warn in
    gaps = info(write_npz(tmp_path / "gaps.npz", [0, 1, 4] * 12))
    text = " ".join(gaps.output.split())
    assert "2 of 5 declared classes have no images: 2 ('2'), 3 ('3')" in text


@pytest.mark.parametrize("class_names", [None, ["a", "b"]])
def test_data_info_refuses_a_file_without_images_by_its_name(tmp_path, class_names) -> None:
    """Issue: an .npz with zero images showed a table reading "classes 1" (exit 0) under a
    warning; train and scan refuse it, and so does `data info`, in one line naming the file."""
    path = write_npz(tmp_path / "empty.npz", np.zeros(0, dtype=np.int64), class_names=class_names)
    message = one_red_line(info(path))
    assert f"error: {path} has no images" in message


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (np.zeros(0, dtype=np.int64), "has no images"),
        ([3] * 40, "has images of one class only (class 3"),
    ],
)
def test_scan_refuses_data_no_classifier_can_learn_before_training(
    tmp_path, monkeypatch, labels, fragment
) -> None:
    """Issue: a single-class set failed later with a model error; 0 images went through."""
    monkeypatch.setattr(
        poisonlab.workflows.scan,
        "train_default_model",
        lambda *a, **k: pytest.fail("trained a model"),
    )
    path = write_npz(tmp_path / "odd.npz", labels)
    result = runner.invoke(
        app, ["scan", str(path), "-D", "spectral-signatures", "-o", str(tmp_path / "out")]
    )
    assert fragment in one_red_line(result)


def test_train_refuses_a_single_class_set_before_training(tmp_path) -> None:
    path = write_npz(tmp_path / "one.npz", [2] * 50, class_names=["a", "b", "c"])
    result = runner.invoke(
        app, ["train", "--data", str(path), "--model", "cnn-small", "--out", str(tmp_path / "m")]
    )
    assert "one class only (class 2, 'c', 50 images)" in one_red_line(result)


def test_doubtful_data_is_trained_on_with_warnings(caplog) -> None:
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = ImageDataset(x, torch.tensor([0] * 20 + [1] * 4), 3, name="tiny")
    with caplog.at_level(logging.WARNING, logger="poisonlab.data"):
        found = check_training_data(data)
    assert len(found) == 2 and caplog.messages == found
    assert f"fewer than {MIN_PER_CLASS} images, class (count): 1 (4)" in found[0]
    assert "1 of 3 declared classes has no images: 2 ('2'); the model still predicts it" in found[1]


def test_prepare_splits_checks_the_training_part(tmp_path, caplog) -> None:
    path = write_npz(tmp_path / "small.npz", [0, 1] * 10)
    with caplog.at_level(logging.WARNING, logger="poisonlab.data"):
        split = prepare_splits(str(path), seed=0)
    assert len(split.train) == 14
    assert any("the training part of 'small'" in m and "fewer than" in m for m in caplog.messages)
    with pytest.raises(DataError, match="one class only"):
        prepare_splits(str(write_npz(tmp_path / "one.npz", [1] * 30)))


def test_mixed_image_sizes_are_resized_with_a_warning(tmp_path, caplog) -> None:
    """Issue: mixed image sizes were silently resized to the first image's size."""
    root = tmp_path / "images"
    write_image(root / "a" / "0.png", (8, 8))
    write_image(root / "a" / "1.png", (12, 10))
    write_image(root / "b" / "0.png", (8, 8))
    with caplog.at_level(logging.WARNING, logger="poisonlab.data"):
        data = load_dataset(root)
    assert data.shape[1:] == (8, 8)
    assert any("1 of 3 images are not 8×8" in m and "a/1.png" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="poisonlab.data"):
        load_dataset(root, size=8)  # a size the user chose: no warning
    assert not caplog.messages


def test_data_info_says_what_it_resized(tmp_path) -> None:
    root = tmp_path / "images"
    write_image(root / "a" / "0.png", (8, 8))
    write_image(root / "a" / "1.png", (12, 10))
    write_image(root / "b" / "0.png", (8, 8))
    result = info(root)
    assert result.exit_code == 0
    # as train and scan show it (the log's WARNING), not a "warning:" line of its own
    text = " ".join(result.output.split())
    assert "WARNING" in text and "warning:" not in text and "1 of 3 images are not 8×8" in text
