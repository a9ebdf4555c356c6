"""Attack metrics: clean accuracy, attack success rate (ASR), per-class ASR and MASR.

Definitions (METHODS.md §8):

- clean accuracy: fraction of clean test images predicted as their true label;
- ASR: fraction of a triggered test set predicted as its attacker label (seed 002's "accuracy on
  poisoned" for all-to-all; seed 004's triggered source-class images predicted as the target);
- per-class ASR: the same restricted to the images whose true class is c;
- MASR (seed 004 §5.1): the unweighted mean of the per-class ASR over every class except the
  target, on full-amplitude triggered test images.

Every function takes either a model (predictions are made with :func:`poisonlab.train.predict`)
or the predicted labels as an int64 tensor of shape (N,). Rates are floats in [0, 1]; an empty
set raises DataError rather than returning a NaN that would look like a number in a report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError

Predictor = nn.Module | Tensor
"""A model (called in eval mode, in batches) or already computed predictions (N,)."""


def predictions(model_or_predictions: Predictor, data: ImageDataset, **kwargs: Any) -> Tensor:
    """Predicted labels (N,) for ``data``: computed with the model, or checked when given."""
    if isinstance(model_or_predictions, Tensor):
        preds = model_or_predictions
        if preds.shape != (len(data),):
            raise DataError(f"{tuple(preds.shape)} predictions for {len(data)} samples")
        return preds.long().cpu()
    from poisonlab.train import predict

    return predict(model_or_predictions, data.images, **kwargs)  # type: ignore[arg-type]


def _rate(hits: Tensor, what: str) -> float:
    if hits.numel() == 0:
        raise DataError(f"cannot compute {what} on an empty set")
    return float(hits.float().mean())


def clean_accuracy(model_or_predictions: Predictor, data: ImageDataset, **kwargs: Any) -> float:
    """Fraction of ``data`` (clean images, true labels) predicted correctly."""
    preds = predictions(model_or_predictions, data, **kwargs)
    return _rate(preds == data.labels, "clean accuracy")


def attack_success_rate(
    model_or_predictions: Predictor, triggered: ImageDataset, **kwargs: Any
) -> float:
    """Fraction of ``triggered`` (labelled with the attacker's labels) predicted as that label."""
    preds = predictions(model_or_predictions, triggered, **kwargs)
    return _rate(preds == triggered.labels, "the attack success rate")


def per_class_attack_success_rate(
    model_or_predictions: Predictor,
    triggered: ImageDataset,
    source_labels: Tensor,
    **kwargs: Any,
) -> dict[int, float]:
    """ASR per true class: {c: fraction of triggered class-c images predicted as their attacker label}.

    ``source_labels`` (N,) holds each triggered image's true class; classes absent from it are
    absent from the result.
    """
    if source_labels.shape != (len(triggered),):
        raise DataError(f"{tuple(source_labels.shape)} source labels for {len(triggered)} images")
    hits = predictions(model_or_predictions, triggered, **kwargs) == triggered.labels
    return {
        int(c): float(hits[source_labels == c].float().mean())
        for c in torch.unique(source_labels).tolist()
    }


def mean_attack_success_rate(
    model_or_predictions: Predictor,
    triggered: ImageDataset,
    source_labels: Tensor,
    *,
    target: int | None = None,
    **kwargs: Any,
) -> float:
    """MASR: unweighted mean of the per-class ASR over the classes present, ``target`` excluded."""
    rates = per_class_attack_success_rate(model_or_predictions, triggered, source_labels, **kwargs)
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
    model: nn.Module,
    clean: ImageDataset,
    triggered: ImageDataset,
    *,
    masr_set: ImageDataset | None = None,
    masr_source_labels: Tensor | None = None,
    target: int | None = None,
    **kwargs: Any,
) -> BackdoorMetrics:
    """All backdoor metrics of ``model``: clean accuracy on ``clean``, ASR on ``triggered``, and
    per-class ASR and MASR on ``masr_set`` (true classes in ``masr_source_labels``)."""
    per_class: dict[int, float] = {}
    masr = None
    if masr_set is not None:
        if masr_source_labels is None:
            raise DataError("a MASR set needs the true class of each image (masr_source_labels)")
        preds = predictions(model, masr_set, **kwargs)
        per_class = per_class_attack_success_rate(preds, masr_set, masr_source_labels)
        masr = mean_attack_success_rate(preds, masr_set, masr_source_labels, target=target)
    return BackdoorMetrics(
        clean_accuracy=clean_accuracy(model, clean, **kwargs),
        asr=attack_success_rate(model, triggered, **kwargs),
        n_clean=len(clean),
        n_triggered=len(triggered),
        masr=masr,
        per_class_asr=per_class,
    )
