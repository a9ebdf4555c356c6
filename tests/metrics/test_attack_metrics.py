"""ASR, per-class ASR, MASR and clean accuracy: known answers from predictions, and from a model
through the workflow step that predicts (metrics never run a model)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError
from poisonlab.metrics.attack import (
    attack_success_rate,
    clean_accuracy,
    evaluate_backdoor,
    mean_attack_success_rate,
    per_class_attack_success_rate,
)
from poisonlab.workflows.backdoor_eval import measure_backdoor


def _set(labels: list[int], num_classes: int = 4) -> ImageDataset:
    n = len(labels)
    images = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(n))
    return ImageDataset(images, torch.tensor(labels, dtype=torch.long), num_classes)


class Constant(nn.Module):
    """Predicts ``label`` for every input."""

    def __init__(self, label: int, num_classes: int = 4) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))
        with torch.no_grad():
            self.bias[label] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), -1)


# triggered set: attacker label 3 for all; true classes 0 (x4), 1 (x2), 2 (x2)
TRIGGERED = _set([3] * 8)
SOURCES = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
PREDS = torch.tensor([3, 3, 3, 0, 3, 1, 1, 2])


def test_asr_is_the_fraction_predicted_as_the_attacker_label() -> None:
    assert attack_success_rate(PREDS, TRIGGERED) == pytest.approx(4 / 8)


def test_per_class_asr_and_unweighted_masr() -> None:
    rates = per_class_attack_success_rate(PREDS, TRIGGERED, SOURCES)
    assert rates == {0: pytest.approx(0.75), 1: pytest.approx(0.5), 2: pytest.approx(0.0)}
    masr = mean_attack_success_rate(PREDS, TRIGGERED, SOURCES, target=3)
    assert masr == pytest.approx((0.75 + 0.5 + 0.0) / 3)  # unweighted, unlike the pooled 0.5
    # the target class never counts
    assert mean_attack_success_rate(PREDS, TRIGGERED, SOURCES, target=0) == pytest.approx(0.25)


def test_clean_accuracy() -> None:
    clean = _set([0, 1, 2, 3])
    assert clean_accuracy(torch.tensor([0, 1, 0, 3]), clean) == pytest.approx(0.75)


def test_a_model_is_measured_through_its_predictions() -> None:
    model = Constant(3)
    metrics = measure_backdoor(
        model, _set([0, 3]), TRIGGERED, masr_set=TRIGGERED, masr_source_labels=SOURCES, target=3
    )
    assert metrics.asr == 1.0 and metrics.masr == 1.0 and metrics.clean_accuracy == 0.5
    assert metrics.to_dict()["per_class_asr"] == {"0": 1.0, "1": 1.0, "2": 1.0}
    assert metrics.n_triggered == 8 and metrics.n_clean == 2
    threes = torch.full((8,), 3)
    direct = evaluate_backdoor(
        torch.tensor([3, 3]), _set([0, 3]), threes, TRIGGERED,
        masr_predictions=threes, masr_set=TRIGGERED, masr_source_labels=SOURCES, target=3,
    )  # fmt: skip
    assert direct == metrics


def test_a_model_is_not_a_prediction() -> None:
    with pytest.raises(DataError, match="tensor of labels"):
        clean_accuracy(Constant(3), _set([0, 3]))  # type: ignore[arg-type]


def test_empty_sets_and_mismatched_predictions_are_errors() -> None:
    with pytest.raises(DataError, match="empty set"):
        attack_success_rate(torch.empty(0, dtype=torch.long), _set([]))
    with pytest.raises(DataError, match="predictions for 8 samples"):
        attack_success_rate(torch.tensor([1, 2, 3]), TRIGGERED)
    with pytest.raises(DataError, match="no non-target class"):
        mean_attack_success_rate(PREDS[:4], _set([3] * 4), SOURCES[:4], target=0)
    with pytest.raises(DataError, match="masr_predictions, masr_source_labels"):
        evaluate_backdoor(
            torch.tensor([0]), _set([0]), torch.zeros(8), TRIGGERED, masr_set=TRIGGERED
        )
