"""A log names the defense each exclusionary retraining confirms.

A ``--defense all`` scan can retrain twice (activation clustering's and raw clustering's
confirmations); without the defense's name the two progress lines read alike.
"""

from __future__ import annotations

import pytest
import torch

import poisonlab.train
from poisonlab import progress
from poisonlab.defenses import build_detector
from poisonlab.defenses.reclassification import retrain_without
from poisonlab.errors import ConfigError
from tests.defenses.conftest import make_case


@pytest.mark.parametrize("name", ["activation-clustering", "raw-clustering"])
def test_a_detectors_confirmation_names_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def train_model(model: object, data: object, config: object, **kwargs: object) -> None:
        seen.append(str(kwargs["description"]))

    monkeypatch.setattr(poisonlab.train, "train_model", train_model)
    monkeypatch.setattr(poisonlab.train, "predict", lambda m, x, **k: torch.zeros(len(x)).long())
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    result = build_detector(name, n_init=2).fit(case.evidence).result
    assert result.poisoned_classes == [1]  # the retrained model sends the suspects to class 0
    assert seen == [f"exclusionary retraining ({name})"]


def test_the_progress_line_carries_the_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress, "_enabled", True)  # as the CLI does; stderr is not a terminal
    case = make_case(n_per_class=20)
    retrain_without(case.evidence, case.is_poison, seed=3, epochs=1, defense="raw-clustering")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("exclusionary retraining (raw-clustering): ")
    assert "done in" in lines[0]


def test_a_large_scans_confirmation_trains_one_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """From 20,000 images (here: from 100) a scan's confirming retraining trains 1 epoch, not the
    recipe's; a scan given --epochs, or a smaller one, repeats the recipe's epochs."""
    from poisonlab.train import recipes
    from poisonlab.workflows import scan as scan_module

    epochs: list[int] = []

    def train_model(model: object, data: object, config: object, **kwargs: object) -> None:
        epochs.append(config.epochs)  # type: ignore[attr-defined]

    monkeypatch.setattr(poisonlab.train, "train_model", train_model)
    monkeypatch.setattr(poisonlab.train, "predict", lambda m, x, **k: torch.zeros(len(x)).long())
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    evidence = case.evidence
    evidence.recipe = recipes.default_recipe("cnn-small", len(evidence.data), epochs=3)
    for large, given, want in ((100, None, 1), (100, 3, 3), (10_000, None, 3)):
        monkeypatch.setattr(recipes, "LARGE", large)
        evidence.retrain_epochs = scan_module.scan_retrain_epochs(len(evidence.data), given)
        evidence._cache.clear()
        build_detector("activation-clustering", n_init=2).fit(evidence)
        assert epochs.pop() == want
    with pytest.raises(ConfigError, match=r"^Evidence retrain_epochs must be an integer >= 1"):
        type(evidence)(evidence.data, retrain_epochs=0)


def test_a_large_scans_confirmation_sees_a_seeded_subset_of_the_kept_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``retrain_images`` (a large scan's 20,000) the retraining trains on that many of the
    kept images, never an excluded one, the same ones for the same seed; without it on all."""
    from poisonlab.train.recipes import LARGE, scan_retrain_images

    seen: list[set[str]] = []

    def train_model(model: object, data: object, config: object, **kwargs: object) -> None:
        seen.append(set(data.ids))  # type: ignore[attr-defined]

    monkeypatch.setattr(poisonlab.train, "train_model", train_model)
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    evidence, excluded = case.evidence, case.is_poison
    evidence.retrain_images = 100
    for seed in (3, 3, 4):
        retrain_without(evidence, excluded, seed=seed, epochs=1)
    first, again, other = seen
    assert len(first) == 100 and first == again and first != other
    assert not first & set(evidence.data.ids[excluded.numpy()])
    evidence.retrain_images = None
    retrain_without(evidence, excluded, seed=3, epochs=1)
    assert len(seen[-1]) == int((~excluded).sum())
    assert scan_retrain_images(LARGE) == LARGE and scan_retrain_images(LARGE - 1) is None
    assert scan_retrain_images(LARGE, epochs=2) is None  # a scan given --epochs trains on all
    with pytest.raises(ConfigError, match=r"^Evidence retrain_images must be an integer >= 1"):
        type(evidence)(evidence.data, retrain_images=0)


@pytest.mark.parametrize(("given", "want"), [(None, 1), (2, 2)])
def test_a_large_scan_sets_it(
    given: int | None, want: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scan() builds its Evidence with the large-scan retraining epochs (here from 100 images)."""
    from poisonlab.train import recipes
    from poisonlab.workflows.scan import scan

    epochs: list[int] = []

    def train_model(model: object, data: object, config: object, **kwargs: object) -> None:
        epochs.append(config.epochs)  # type: ignore[attr-defined]

    monkeypatch.setattr(recipes, "LARGE", 100)
    monkeypatch.setattr(poisonlab.train, "train_model", train_model)
    monkeypatch.setattr(poisonlab.train, "predict", lambda m, x, **k: torch.zeros(len(x)).long())
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    result = scan(case.evidence.data, defenses="activation-clustering", epochs=given)
    assert result.ran[0].result.poisoned_classes == [1]  # type: ignore[union-attr]
    assert epochs[-1] == want
