"""The public Python entry points given an argument of the wrong type (a name where a data set
goes, a seed where a generator goes, a dict where a recipe goes, the data where the evidence
goes): one ConfigError naming the function, the argument and the value, not an AttributeError
from deep inside (issue: a newcomer's walk through the README's Python API)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from poisonlab.data import save_npz, split_dataset
from poisonlab.defenses import Evidence, build_detector
from poisonlab.errors import ConfigError
from poisonlab.metrics.detection import evaluate_detection
from poisonlab.models import ModelConfig, build_model
from poisonlab.train import train_model
from poisonlab.train.recipes import default_recipe
from tests.conftest import blobs_dataset

DATA = blobs_dataset(n_per_class=6, seed=0)
CONFIG = ModelConfig("cnn-small", 1, 8, 8, DATA.num_classes, feature_dim=16)
MODEL = build_model(CONFIG, seed=0)
RECIPE = default_recipe("cnn-small", len(DATA), seed=0)


def cases() -> list[Any]:
    fit = build_detector("spectral-signatures").fit
    return [
        ("split_dataset", lambda: split_dataset("digits"), "dataset must be an ImageDataset"),
        ("split_dataset", lambda: split_dataset(DATA, seed=torch.Generator()), "seed must be"),
        ("split_dataset", lambda: split_dataset(DATA, holdout=10), "holdout must be a number"),
        ("save_npz", lambda: save_npz("digits", "x.npz"), "dataset must be an ImageDataset"),
        ("build_model", lambda: build_model("cnn-small"), "config must be a ModelConfig"),
        ("build_model", lambda: build_model(CONFIG, seed=torch.Generator()), "seed must be"),
        (
            "train_model",
            lambda: train_model(MODEL, "digits", RECIPE),
            "data must be an ImageDataset",
        ),
        (
            "train_model",
            lambda: train_model(MODEL, DATA, {"epochs": 1}),
            "config must be a TrainConfig",
        ),
        (
            "train_model",
            lambda: train_model("cnn-small", DATA, RECIPE),
            "model must be a poisonlab Network",
        ),
        ("Evidence", lambda: Evidence("digits", MODEL), "data must be an ImageDataset"),
        ("Evidence", lambda: Evidence(DATA, "runs/model"), "model must be a poisonlab Network"),
        ("Evidence", lambda: Evidence(DATA, MODEL, holdout="x.npz"), "holdout must be"),
        ("spectral-signatures", lambda: fit(DATA), "evidence must be an Evidence"),
        (
            "evaluate_detection",
            lambda: evaluate_detection([0.5], [True]),
            "result must be a detector's result",
        ),
    ]


@pytest.mark.parametrize(
    ("owner", "call", "expected"), cases(), ids=lambda c: c if isinstance(c, str) else ""
)
def test_wrong_typed_argument_is_named(tmp_path, monkeypatch, owner, call, expected) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"^{owner} {expected}") as info:
        call()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.npz").exists()


def test_scan_defenses_and_write_scan_result_of_the_wrong_type(tmp_path) -> None:
    """scan(data, defenses=3) raised "'int' object is not iterable"; write_scan(None, folder)
    made the folder, then raised an AttributeError."""
    from poisonlab.scan import scan, write_scan

    with pytest.raises(ConfigError, match=r"^defenses must be 'all', a name, .* got 3$"):
        scan(DATA, defenses=3, model=MODEL)
    with pytest.raises(ConfigError, match=r"^write_scan result must be a ScanResult"):
        write_scan(None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_poisoned_dataset_where_its_parts_go_says_which_part() -> None:
    """The likeliest slip after an attack: the PoisonedDataset itself where its .dataset or its
    .is_poison goes (evaluate_detection said "expected a 1-d array, got shape ()")."""
    from poisonlab.attacks import build_attack
    from poisonlab.seeding import make_generator

    attack = build_attack("badnets", rate=0.2, position="bottom-right", offset=0)
    poisoned = attack.poison(DATA, generator=make_generator(0))
    with pytest.raises(
        ConfigError, match=r"^Evidence data must be .* a PoisonedDataset's \.dataset"
    ):
        Evidence(poisoned, MODEL)
    result = build_detector("spectral-signatures").fit(Evidence(poisoned.dataset, MODEL)).result
    with pytest.raises(ConfigError, match=r"got a PoisonedDataset: pass its \.is_poison$"):
        evaluate_detection(result, poisoned)
    assert evaluate_detection(result, poisoned.is_poison).auroc >= 0  # the right call works


def test_predict_evaluate_and_measure_backdoor_name_what_they_take() -> None:
    """README's `clean_accuracy(predict(model, data.images), data)`: predict(model, data) raised
    "'ImageDataset' object is not subscriptable"; evaluate and measure_backdoor given a name, an
    AttributeError."""
    from poisonlab.train import evaluate, predict
    from poisonlab.workflows.backdoor_eval import measure_backdoor

    with pytest.raises(ConfigError, match=r"^predict images must be .* got ImageDataset: pass its"):
        predict(MODEL, DATA)
    with pytest.raises(ConfigError, match=r"^predict images must be .* got list \[1, 2\]$"):
        predict(MODEL, [1, 2])
    with pytest.raises(ConfigError, match=r"^evaluate data must be an ImageDataset"):
        evaluate(MODEL, "digits")
    with pytest.raises(ConfigError, match=r"^measure_backdoor triggered must be an ImageDataset"):
        measure_backdoor(MODEL, DATA, "triggered.npz")
    assert predict(MODEL, DATA.images).shape == (len(DATA),)


def test_predict_shows_the_keywords_it_takes() -> None:
    """help(predict) and an editor show device and batch_size (it took ``**kwargs: object``),
    and it gives predict_logits' argmax for any batch size."""
    import inspect

    from poisonlab.train import predict, predict_logits

    keywords = inspect.signature(predict).parameters
    assert [k for k, p in keywords.items() if p.kind is p.KEYWORD_ONLY] == ["device", "batch_size"]
    expected = predict_logits(MODEL, DATA.images).argmax(1)
    assert torch.equal(predict(MODEL, DATA.images, device="cpu", batch_size=7), expected)


def test_score_samples_and_combine_name_what_they_take() -> None:
    """score_samples("x.npz") said "Evidence data must be ..." (a class the caller never named);
    combine(result, labels) with one result instead of a list, or the data set for the labels,
    raised an AttributeError."""
    from poisonlab.defenses.fusion import combine

    detector = build_detector("spectral-signatures").fit(Evidence(DATA, MODEL))
    with pytest.raises(ConfigError, match=r"^spectral-signatures\.score_samples data must be an"):
        detector.score_samples("x.npz")
    result = detector.result
    with pytest.raises(ConfigError, match=r"^combine results must be a list of DetectionResults"):
        combine(result, DATA.labels)
    with pytest.raises(ConfigError, match=r"^combine labels must be the claimed labels"):
        combine([result], DATA)
    assert combine([], DATA.labels).removed.sum() == 0  # no result: nothing removed
