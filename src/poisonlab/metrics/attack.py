"""Attack metrics: clean accuracy, attack success rate (ASR), per-class ASR and MASR.

Definitions (docs/methods.md#asr):

- clean accuracy: fraction of clean test images predicted as their true label;
- ASR: fraction of a triggered test set predicted as its attacker label (Subedar et al. 2019's
  "accuracy on poisoned" for all-to-all; Schulth et al. 2022's triggered source-class images
  predicted as the target);
- per-class ASR: the same restricted to the images whose true class is c;
- MASR (Schulth et al. 2022 §5.1): the unweighted mean of the per-class ASR over every class
  except the target, on full-amplitude triggered test images.

Every function takes the predicted labels, an int64 tensor of shape (N,) (a model's predictions:
:func:`poisonlab.train.predict`, or :func:`poisonlab.workflows.backdoor_eval.measure_backdoor`
for a model), never a model: metrics measure, they do not run inference. Rates are floats in
[0, 1]; an empty set raises DataError rather than returning a NaN that would look like a number
in a report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError


def predictions(preds: Tensor, data: ImageDataset) -> Tensor:
    """``preds`` checked against ``data``: one predicted label per sample, int64 (N,) on the CPU."""
    if not isinstance(preds, Tensor):
        raise DataError(f"predictions must be a tensor of labels, got {type(preds).__name__}")
    if preds.shape != (len(data),):
        raise DataError(f"{tuple(preds.shape)} predictions for {len(data)} samples")
    return preds.long().cpu()


def _rate(hits: Tensor, what: str) -> float:
    if hits.numel() == 0:
        raise DataError(f"cannot compute {what} on an empty set")
    return float(hits.float().mean())


def clean_accuracy(preds: Tensor, data: ImageDataset) -> float:
    """Fraction of ``data`` (clean images, true labels) whose prediction is the true label."""
    preds = predictions(preds, data)
    return _rate(preds == data.labels, "clean accuracy")


def attack_success_rate(preds: Tensor, triggered: ImageDataset) -> float:
    """Fraction of ``triggered`` (labelled with the attacker's labels) predicted as that label."""
    preds = predictions(preds, triggered)
    return _rate(preds == triggered.labels, "the attack success rate")


def per_class_attack_success_rate(
    preds: Tensor, triggered: ImageDataset, source_labels: Tensor
) -> dict[int, float]:
    """ASR per true class: {c: fraction of triggered class-c images predicted as their attacker
    label}.

    ``source_labels`` (N,) holds each triggered image's true class; classes absent from it are
    absent from the result.
    """
    if source_labels.shape != (len(triggered),):
        raise DataError(f"{tuple(source_labels.shape)} source labels for {len(triggered)} images")
    hits = predictions(preds, triggered) == triggered.labels
    return {
        int(c): float(hits[source_labels == c].float().mean())
        for c in torch.unique(source_labels).tolist()
    }


def mean_attack_success_rate(
    preds: Tensor, triggered: ImageDataset, source_labels: Tensor, *, target: int | None = None
) -> float:
    """MASR: unweighted mean of the per-class ASR over the classes present, ``target`` excluded."""
    rates = per_class_attack_success_rate(preds, triggered, source_labels)
    kept = [r for c, r in rates.items() if c != target]
    if not kept:
        raise DataError("cannot compute MASR: no non-target class in the triggered set")
    return sum(kept) / len(kept)


@dataclass(frozen=True)
class BackdoorMetrics:
    """Clean accuracy, ASR and (when a MASR set is given) per-class ASR and MASR of one model."""

    clean_accuracy: float
    asr: float
    n_clean: int
    n_triggered: int
    masr: float | None = None
    per_class_asr: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (class keys as strings, rates rounded to 5 decimals)."""
        data = asdict(self)
        for key in ("clean_accuracy", "asr", "masr"):
            if data[key] is not None:
                data[key] = round(data[key], 5)
        data["per_class_asr"] = {str(c): round(r, 5) for c, r in self.per_class_asr.items()}
        return data


def evaluate_backdoor(
    clean_predictions: Tensor,
    clean: ImageDataset,
    triggered_predictions: Tensor,
    triggered: ImageDataset,
    *,
    masr_predictions: Tensor | None = None,
    masr_set: ImageDataset | None = None,
    masr_source_labels: Tensor | None = None,
    target: int | None = None,
) -> BackdoorMetrics:
    """All backdoor metrics of one model's predictions: clean accuracy on ``clean``, ASR on
    ``triggered``, and per-class ASR and MASR on ``masr_set`` (true classes in
    ``masr_source_labels``, predictions in ``masr_predictions``)."""
    per_class: dict[int, float] = {}
    masr = None
    if masr_set is not None:
        if masr_source_labels is None or masr_predictions is None:
            raise DataError(
                "a MASR set needs its predictions and the true class of each image "
                "(masr_predictions, masr_source_labels)"
            )
        per_class = per_class_attack_success_rate(masr_predictions, masr_set, masr_source_labels)
        masr = mean_attack_success_rate(
            masr_predictions, masr_set, masr_source_labels, target=target
        )
    return BackdoorMetrics(
        clean_accuracy=clean_accuracy(clean_predictions, clean),
        asr=attack_success_rate(triggered_predictions, triggered),
        n_clean=len(clean),
        n_triggered=len(triggered),
        masr=masr,
        per_class_asr=per_class,
    )
