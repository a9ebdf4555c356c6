"""Uncertainty of Monte-Carlo predictions: entropy, BALD (mutual information), MC accuracy.

Subedar et al. 2019 (Subedar et al., "Deep Probabilistic Models to Detect Data Poisoning Attacks",
App. A.1, eq. 1–3) scores inputs with BALD (Houlsby et al. 2011, arXiv:1112.5745): for T posterior
samples p_t = softmax(g_t(x)) and their mean p̄ = (1/T) Σ_t p_t,

    H(p) = −Σ_k p_k log(p_k + 1e-15)                       (entropy, in nats)
    predictive entropy = H(p̄)                              (total uncertainty)
    expected entropy   = (1/T) Σ_t H(p_t)                   (aleatoric part)
    BALD               = H(p̄) − (1/T) Σ_t H(p_t)            (epistemic part, ≥ 0)

The 1e-15 inside the logarithm is docs/methods.md#bald's (and bayesian-torch's
``utils.util.entropy``), so p = 0 contributes 0 instead of NaN. The map p ↦ −p log(p + 1e-15) is
still concave, so BALD is non-negative up to rounding; it is 0 exactly when every pass gives the
same distribution.

These are the scores of the Bayesian detectors, so they sit beside the models they measure;
:mod:`poisonlab.metrics.uncertainty` re-exports them with the BNN's accuracy metrics.
Everything here is a pure function of tensors: (T, N, K) Monte-Carlo probabilities (or (N, K)
single-model probabilities) in, float64 per-sample values out, on the input's device. Nothing is
clamped: a tiny negative BALD (−1e-16) is rounding, reported as is.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_EPS = 1e-15
"""Added inside the logarithm of every entropy (Subedar et al. 2019 / bayesian-torch convention)."""


def _check_mc(mc_probs: Tensor) -> None:
    if mc_probs.ndim != 3:
        raise ValueError(
            f"Monte-Carlo probabilities must have shape (T, N, K), got {mc_probs.shape}"
        )
    if mc_probs.shape[0] < 1:
        raise ValueError("at least one Monte-Carlo sample is needed")


def entropy(probs: Tensor, eps: float = LOG_EPS) -> Tensor:
    """Shannon entropy −Σ_k p_k log(p_k + eps) over the last axis, in nats.

    Parameters
    ----------
    probs : Tensor of shape (..., K)
        Class probabilities (rows summing to 1).
    eps : float
        Added inside the logarithm.

    Returns
    -------
    Tensor of shape (...,), float64
    """
    p = probs.double()
    return -(p * torch.log(p + eps)).sum(-1)


def predictive_entropy(mc_probs: Tensor) -> Tensor:
    """H(p̄), the entropy of the mean of T Monte-Carlo predictions (Subedar et al. 2019 eq. 3).

    Parameters
    ----------
    mc_probs : Tensor of shape (T, N, K)

    Returns
    -------
    Tensor of shape (N,), float64
    """
    _check_mc(mc_probs)
    return entropy(mc_probs.double().mean(0))


def expected_entropy(mc_probs: Tensor) -> Tensor:
    """(1/T) Σ_t H(p_t), the mean entropy of the individual passes.

    Parameters
    ----------
    mc_probs : Tensor of shape (T, N, K)

    Returns
    -------
    Tensor of shape (N,), float64
    """
    _check_mc(mc_probs)
    return entropy(mc_probs).mean(0)


def mutual_information(mc_probs: Tensor) -> Tensor:
    """BALD = H(p̄) − (1/T) Σ_t H(p_t) (Subedar et al. 2019 eq. 2; Houlsby et al. 2011).

    The mutual information between the prediction and the weights: high when the passes disagree
    with each other while each is confident, 0 when they all agree.

    Parameters
    ----------
    mc_probs : Tensor of shape (T, N, K)

    Returns
    -------
    Tensor of shape (N,), float64

    References
    ----------
    N. Houlsby, F. Huszár, Z. Ghahramani, M. Lengyel, "Bayesian Active Learning for
    Classification and Preference Learning", arXiv:1112.5745, 2011.
    """
    return predictive_entropy(mc_probs) - expected_entropy(mc_probs)


def max_softmax(probs: Tensor) -> Tensor:
    """Largest class probability per sample (Hendrycks & Gimpel's baseline confidence).

    Parameters
    ----------
    probs : Tensor of shape (N, K)

    Returns
    -------
    Tensor of shape (N,), float64
    """
    return probs.double().max(-1).values


def mc_predictions(mc_probs: Tensor) -> Tensor:
    """argmax_k p̄_k, the Monte-Carlo-averaged prediction (Subedar et al. 2019 eq. 1), int64
    (N,)."""
    _check_mc(mc_probs)
    return mc_probs.double().mean(0).argmax(-1)


def mc_accuracy(mc_probs: Tensor, labels: Tensor) -> float:
    """Fraction of samples whose MC-averaged prediction equals ``labels``.

    With the attacker's labels of a triggered set this is Subedar et al. 2019 Table 1's "accuracy on
    poisoned" (the attack success rate); with true labels, the clean accuracy.

    Parameters
    ----------
    mc_probs : Tensor of shape (T, N, K)
    labels : Tensor of shape (N,), int64

    Returns
    -------
    float in [0, 1] (NaN for N = 0)
    """
    predicted = mc_predictions(mc_probs).cpu()
    if predicted.shape != labels.shape:
        raise ValueError(f"{tuple(labels.shape)} labels for {tuple(predicted.shape)} predictions")
    if len(labels) == 0:
        return float("nan")
    return float((predicted == labels.cpu()).double().mean())
