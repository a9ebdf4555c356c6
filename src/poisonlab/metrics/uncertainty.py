"""Accuracy of a Bayesian network's Monte-Carlo predictions, beside its deterministic model's.

Subedar et al. 2019 ("Deep Probabilistic Models to Detect Data Poisoning Attacks",
arXiv:1912.01206), Table 1: the accuracy of the deterministic network (DNN) and of its Bayesian
copy (BNN, predicting with the MC-averaged probabilities p̄) on clean data and on triggered data.
Like every metric, :func:`backdoor_accuracy` takes predictions, never a model.

The uncertainty scores themselves (entropy, BALD, MC accuracy) are functions of the MC
probabilities that the detectors use: :mod:`poisonlab.models.uncertainty`, re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.models.uncertainty import (
    LOG_EPS,
    entropy,
    expected_entropy,
    max_softmax,
    mc_accuracy,
    mc_predictions,
    mutual_information,
    predictive_entropy,
)

__all__ = [
    "LOG_EPS",
    "BackdoorAccuracy",
    "backdoor_accuracy",
    "entropy",
    "expected_entropy",
    "max_softmax",
    "mc_accuracy",
    "mc_predictions",
    "mutual_information",
    "predictive_entropy",
]


@dataclass(frozen=True)
class BackdoorAccuracy:
    """Table 1 of Subedar et al. 2019 for one model pair: accuracy on clean and triggered data.

    "Triggered" accuracy is the fraction of triggered inputs predicted as their backdoor label
    (the attack success rate); the BNN predicts with its MC-averaged probabilities p̄.
    """

    dnn_clean: float
    dnn_triggered: float
    bnn_clean: float
    bnn_triggered: float
    n_clean: int
    n_triggered: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(vars(self))


def backdoor_accuracy(
    dnn_clean: Tensor,
    dnn_triggered: Tensor,
    clean: ImageDataset,
    triggered: ImageDataset,
    mc_clean: Tensor,
    mc_triggered: Tensor,
) -> BackdoorAccuracy:
    """DNN and BNN accuracy on clean data and on triggered data (Subedar et al. 2019, Table 1).

    Parameters
    ----------
    dnn_clean, dnn_triggered : Tensor of shape (N,), int64
        The deterministic model's predicted labels on ``clean`` and on ``triggered``.
    clean : ImageDataset
        Clean test images with their true labels.
    triggered : ImageDataset
        Triggered test images labelled with the attacker's labels ((y+1) mod K for all-to-all).
    mc_clean, mc_triggered : Tensor of shape (T, N, K)
        The BNN's Monte-Carlo probabilities on ``clean`` and ``triggered``
        (:func:`poisonlab.models.bayesian.mc_probabilities`, reusable for BALD).

    Returns
    -------
    BackdoorAccuracy
        NaN accuracies for an empty set.
    """

    def accuracy(predicted: Tensor, data: ImageDataset) -> float:
        if len(data) == 0:
            return float("nan")
        if predicted.shape != (len(data),):
            raise ValueError(f"{tuple(predicted.shape)} predictions for {len(data)} samples")
        return float((predicted.cpu() == data.labels).float().mean())

    return BackdoorAccuracy(
        dnn_clean=accuracy(dnn_clean, clean),
        dnn_triggered=accuracy(dnn_triggered, triggered),
        bnn_clean=mc_accuracy(mc_clean, clean.labels),
        bnn_triggered=mc_accuracy(mc_triggered, triggered.labels),
        n_clean=len(clean),
        n_triggered=len(triggered),
    )
