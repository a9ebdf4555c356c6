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
