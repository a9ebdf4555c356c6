"""What the library ``scan`` accepts as inputs and what it refuses before any work: data and models
given as paths, thresholds of the wrong type, held-out sets that do not match, and a held-out
calibrated cut of the combined score when no selected defense makes that score.

Runs on the 8×8 ``blobs`` images with an untrained (seeded) cnn-small: about a second each.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from poisonlab.data import save_npz
from poisonlab.errors import ConfigError, DataError
from poisonlab.models import ModelConfig, build_model, save_checkpoint
from poisonlab.workflows import scan as scan_module
from poisonlab.workflows.scan import scan
from tests.conftest import blobs_dataset


def tiny_model(classes: int = 3, size: int = 8):
    config = ModelConfig("cnn-small", 1, size, size, classes, feature_dim=8)
    return build_model(config, seed=0)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if scan starts training a model."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("scan trained a model before refusing its inputs")

    monkeypatch.setattr(scan_module, "train_default_model", refuse)


def test_paths_for_data_holdout_and_model(tmp_path) -> None:
    """README: ``scan(data, defenses=..., holdout=...)``; paths work like the command line's."""
    data_path = save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "suspect.npz")
    holdout_path = save_npz(blobs_dataset(n_per_class=10, seed=1), tmp_path / "clean.npz")
    folder = save_checkpoint(tiny_model(), tmp_path / "model")
    result = scan(str(data_path), defenses="deep-features", holdout=holdout_path, model=str(folder))
    assert len(result.data) == 60 and result.holdout is not None and len(result.holdout) == 30
    assert result.models[0].source == "checkpoint"
    assert result.ran[0].result.scores.shape == (60,)


def test_wrong_types_and_unfit_models_are_refused_by_name(no_training: None) -> None:
    data = blobs_dataset(n_per_class=10)
    with pytest.raises(ConfigError, match=r"threshold must be a Threshold or its text.*got 0\.1"):
        scan(data, defenses="raw-clustering", threshold=0.1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="data must be an ImageDataset or a data path"):
        scan(data.images, defenses="raw-clustering")  # type: ignore[arg-type]
    from poisonlab.attacks import build_attack

    poisoned = build_attack("badnets", count=3).poison(data, generator=torch.Generator())
    with pytest.raises(ConfigError, match=r"got PoisonedDataset: pass its \.dataset$"):
        scan(poisoned, defenses="raw-clustering")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="model must be a Network, a Checkpoint"):
        scan(data, defenses="spectral-signatures", model=object())  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"does not fit data set 'blobs': num_classes 4 \(data: 3"
    ):
        scan(data, defenses="spectral-signatures", model=tiny_model(classes=4))
    with pytest.raises(ConfigError, match=r"height 10 \(data: 8\), width 10 \(data: 8\)"):
        scan(data, defenses="spectral-signatures", model=tiny_model(size=10))


def test_holdout_missing_the_last_class_says_why(no_training: None) -> None:
    """A held-out .npz without class_names whose largest label is below the data's: the message
    says where its class count came from and how to fix it."""
    data = blobs_dataset(n_per_class=10, num_classes=3)
    holdout = blobs_dataset(n_per_class=10, num_classes=2)
    with pytest.raises(DataError, match=r"\(2 classes\) does not match.*largest label is 1.*"):
        scan(data, defenses="deep-features", holdout=holdout)


@pytest.mark.parametrize("defenses", ["deep-features", "deep-features,dnn-uncertainty"])
def test_fpr_cut_of_the_combined_score_needs_a_member(no_training: None, defenses: str) -> None:
    """fpr: calibrates the combined score of the verdict-giving defenses on the held-out set; with
    none selected it is refused before training (it once failed after the whole scan, saying
    "give a held-out set" although one was given)."""
    data = blobs_dataset(n_per_class=10)
    holdout = blobs_dataset(n_per_class=5, seed=1)
    with pytest.raises(ConfigError, match=r"none of the selected defenses.*add one of") as error:
        scan(data, defenses=defenses, holdout=holdout, threshold="fpr:0.05")
    assert "activation-clustering" in str(error.value) and "give a held-out" not in str(error.value)


def test_classes_without_images(no_training: None, caplog: pytest.LogCaptureFixture) -> None:
    """classes=[an empty class] once ran and judged it clean with nothing analysed."""
    data = blobs_dataset(n_per_class=10)
    declared = replace(data, num_classes=4, class_names=("0", "1", "2", "3"))
    with pytest.raises(DataError, match=r"no images of the class\(es\) to analyse \(3\)"):
        scan(declared, defenses="raw-clustering", classes=[3])
    result = scan(declared, defenses="raw-clustering", classes=[0, 3])
    assert result.ran and "no images of class(es) 3" in caplog.text


def test_a_holdout_that_is_the_data_itself_warns(
    no_training: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue: `scan data.npz --holdout data.npz` ran without a word, the "clean" reference being
    the suspect data itself."""
    data = blobs_dataset(n_per_class=10)
    other = replace(
        blobs_dataset(n_per_class=4, seed=1), ids=np.array([f"h{i}" for i in range(12)])
    )
    model = tiny_model()
    scan(data, defenses="spectral-signatures", holdout=other, model=model)
    assert "shares" not in caplog.text
    scan(data, defenses="spectral-signatures", holdout=data.subset(torch.arange(6)), model=model)
    assert f"held-out set {data.name!r} shares 6 of its 6 samples with data set" in caplog.text


def test_a_holdout_from_a_file_of_the_same_name_is_not_the_data(
    no_training: None, caplog: pytest.LogCaptureFixture
) -> None:
    """train/data.npz scanned with holdout/data.npz: both have the ids data.npz#0..., and the
    held-out set was said to share every sample with the data."""
    data = blobs_dataset(n_per_class=10)
    ids = np.array([f"data.npz#{i}" for i in range(30)])
    other = replace(blobs_dataset(n_per_class=4, seed=1), ids=ids[:12])
    scan(replace(data, ids=ids), defenses="spectral-signatures", holdout=other, model=tiny_model())
    assert "shares" not in caplog.text
    half = replace(other, images=torch.cat([data.images[:6], other.images[6:]]))
    scan(replace(data, ids=ids), defenses="spectral-signatures", holdout=half, model=tiny_model())
    assert "shares 6 of its 12 samples with data set" in caplog.text


def test_holdout_class_names_are_compared_only_when_both_have_names() -> None:
    """Numbers 0..K-1 are what data without class_names gets: they cannot contradict names."""
    from poisonlab.workflows.scan_inputs import check_inputs

    named = replace(blobs_dataset(n_per_class=4), class_names=("cat", "dog", "horse"))
    numbered = blobs_dataset(n_per_class=4, seed=1)
    check_inputs(named, numbered, None)
    check_inputs(numbered, named, None)
    renamed = replace(numbered, class_names=("cat", "horse", "dog"))
    with pytest.raises(DataError, match=r"class 1 is 'horse' there and 'dog' here, class 2 is"):
        check_inputs(named, renamed, None)
