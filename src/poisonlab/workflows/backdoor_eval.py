"""A trained model's backdoor metrics: run the model once per set, then measure the predictions.

:mod:`poisonlab.metrics.attack` measures predictions only; this workflow step makes them (in eval
mode, every module's mode restored after) for the clean test set, the triggered set and the
optional MASR set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from poisonlab.data.dataset import DATASET, ImageDataset
from poisonlab.metrics.attack import BackdoorMetrics, evaluate_backdoor
from poisonlab.train.evaluate import predict
from poisonlab.validation import check_param

__all__ = ["measure_backdoor"]


def measure_backdoor(
    model: nn.Module,
    clean: ImageDataset,
    triggered: ImageDataset,
    *,
    masr_set: ImageDataset | None = None,
    masr_source_labels: Tensor | None = None,
    target: int | None = None,
    device: torch.device | str | None = None,
) -> BackdoorMetrics:
    """Clean accuracy, ASR and (with ``masr_set``) per-class ASR and MASR of ``model``."""
    for name, data in (("clean", clean), ("triggered", triggered)):
        check_param("measure_backdoor", name, data, [DATASET])
    check_param("measure_backdoor", "masr_set", masr_set, [DATASET, None])
    network: Any = model  # a Network, or any classifier returning logits
    return evaluate_backdoor(
        predict(network, clean.images, device=device),
        clean,
        predict(network, triggered.images, device=device),
        triggered,
        masr_predictions=None
        if masr_set is None
        else predict(network, masr_set.images, device=device),
        masr_set=masr_set,
        masr_source_labels=masr_source_labels,
        target=target,
    )
