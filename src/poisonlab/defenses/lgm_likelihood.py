"""LGM likelihood filter: low p(f(x) | claimed class) under a Gaussian-mixture-trained model.

Yaseen et al. 2020 (Yaseen, Aadil, Sargsyan, "Preventing Clean Label Poisoning using Gaussian
Mixture Loss", Algorithm 1 step 5), on the Large-Margin Gaussian Mixture loss of Wan et al., CVPR
2018 (arXiv:1803.02988); definitions in docs/methods.md#lgm-likelihood.

A model trained with the L-GM loss models its penultimate features as one Gaussian per class, N(μ_k,
Σ_k) (identity covariance in Yaseen et al. 2020). A clean-label feature-collision poison keeps its
base label but has the features of a target from another class, so its claimed-class likelihood
p(f(x) | y) is low. The score is s(x) = −log p(f(x) | y) (higher = more suspicious); the paper keeps
a sample when p(f | y) > T and sweeps T for an ROC curve.

Default rule (the paper fixes no T): under the model, the squared Mahalanobis distance
D²(x) = (f − μ_y)ᵀ Σ_y⁻¹ (f − μ_y) of a clean sample follows χ²(d), d = feature dimension, so a
sample is flagged when its χ² p-value is below ``alpha`` (default 0.001): D² > s_y²·χ²_{d, 1−α}.

* ``scale="robust"`` (default): s_y² = median{D² of the samples claiming y} / median(χ²_d), the
  model's covariance shape with each class's spread measured on the scanned data (the median
  holds while poisons are under half of a class). A trained LGM network does not give its
  features the unit spread its loss assumes: Yaseen et al. 2020's lgm-net on digits gives clean
  features a
  per-class standard deviation of about 0.1–0.2, so the literal rule below flags no clean sample
  and no poison closer to its claimed mean than √13.8 ≈ 3.7, the distance between class means.
* ``scale="model"``: s_y = 1, the χ² rule literally under the model's covariance.

This is the paper's rule "keep if p(f | y) > T" with T the density at the critical distance; for
``scale="model"`` in Yaseen et al. 2020's un-normalised units (s = exp(−½ ||f − μ_y||²), identity
covariance) T = exp(−½ χ²_{d, 1−α}), reported as ``extras["seed_threshold_T"]``.

The nominal false-positive rate α holds only for Gaussian features. Trained ones have heavier
tails: on digits (bench/results/scan.md) the robust rule at α = 0.001 flagged 1.9% of the clean
training split, 5.6% of the clean fine-tuning set and 7.8% of the clean held-out split, and all
36 feature-collision poisons; the model-scale rule flagged no clean sample and 19 of 36 poisons.
For a calibrated rate use a target-FPR threshold on clean held-out scores (``TargetFPR``), which
are returned as ``reference`` when a held-out set is given. The score is always the model's
−log p(f | y), so its ranking across classes does not use the robust rule's per-class spreads.

Limits: needs a model with an LGM head (``Network.is_lgm``); it detects samples far from their
claimed class in feature space, so poisons whose features stay near their label's mean (e.g. a
backdoor the model has fitted into its label's cluster) are not found by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from poisonlab.defenses.base import Detector, per_class_scores, register_detector
from poisonlab.defenses.evidence import Evidence, Part
from poisonlab.defenses.thresholds import ScoreSet, Threshold
from poisonlab.validation import FRACTION, ConstraintList, Options

_LOG_2PI = math.log(2.0 * math.pi)
SCALES = ("robust", "model")


@dataclass(frozen=True, eq=False)
class ClaimedLikelihood:
    """Claimed-class statistics of one part of an Evidence.

    neg_log_likelihood : float64 (N,), −log p(f(x) | y)
    mahalanobis_sq : float64 (N,), D² to the claimed class's mean (χ²(dim) under the model)
    dim : feature dimension d
    """

    neg_log_likelihood: Tensor
    mahalanobis_sq: Tensor
    dim: int


def claimed_statistics(
    log_likelihood: Tensor, labels: Tensor, half_log_det: Tensor, dim: int
) -> ClaimedLikelihood:
    """Pick the claimed class's log-likelihood and recover D² from it.

    log N(f; μ_y, Σ_y) = −½ D² − ½ log|Σ_y| − ½ d log 2π, so D² = −2·LL − 2·(½ log|Σ_y|) − d log 2π.

    Parameters
    ----------
    log_likelihood : Tensor of shape (N, K), log p(f | k) for every class
    labels : Tensor of shape (N,), claimed classes
    half_log_det : Tensor of shape (K,), ½ log|Σ_k| (zeros for identity covariances)
    dim : feature dimension d
    """
    ll = log_likelihood.double().gather(1, labels.long()[:, None]).squeeze(1)
    distance = -2.0 * ll - 2.0 * half_log_det.double()[labels.long()] - dim * _LOG_2PI
    return ClaimedLikelihood(-ll, distance.clamp_min(0.0), dim)


def chi2_sf(value: Tensor, dim: int) -> Tensor:
    """Survival function of χ²(dim) at ``value`` (the p-value), float64."""
    return torch.special.gammaincc(torch.tensor(dim / 2.0, dtype=torch.float64), value.double() / 2)


def chi2_critical(alpha: float, dim: int) -> float:
    """χ²_{dim, 1−alpha}: the distance² above which a sample's p-value is below ``alpha``."""
    from scipy.stats import chi2

    return float(chi2.isf(alpha, dim))


def class_spread(distance_sq: Tensor, labels: Tensor, num_classes: int, dim: int) -> Tensor:
    """s_c² = median of D² over the samples labelled c / median of χ²(dim), float64 (K,).

    Classes without samples get 1 (the model's own spread).
    """
    from scipy.stats import chi2

    spread = torch.ones(num_classes, dtype=torch.float64)
    reference = float(chi2.median(dim))
    for c in labels.unique().tolist():
        spread[c] = float(distance_sq[labels == c].median()) / reference
    return spread.clamp_min(torch.finfo(torch.float64).tiny)


def lgm_claimed_likelihood(evidence: Evidence, part: Part = "data") -> ClaimedLikelihood:
    """Claimed-class statistics under the evidence's LGM model (cached in the evidence)."""

    def compute() -> ClaimedLikelihood:
        log_likelihood = evidence.lgm_log_likelihood(part)
        head = evidence.require_model().head
        with torch.no_grad():
            half_log_det = head.half_log_det().detach().cpu()  # type: ignore[operator]
        dim = int(head.means.shape[1])  # type: ignore[union-attr,index]
        return claimed_statistics(log_likelihood, evidence.labels(part), half_log_det, dim)

    return evidence.cached(("lgm_claimed_likelihood", part), compute)  # type: ignore[no-any-return]


@register_detector("lgm-likelihood")
class LGMLikelihood(Detector):
    """Yaseen et al. 2020's filter: score −log p(f(x) | y); flag when the χ² p-value is below
    ``alpha``.

    Parameters
    ----------
    alpha : float in (0, 1)
        Nominal false-positive rate of the default rule on Gaussian features.
    scale : {"robust", "model"}
        Per-class spread of the χ² rule: measured on the scanned data (median), or the model's.
    threshold : Threshold, its text (``fpr:0.05``...) or None
        How flags are decided (default: the χ² rule).
    classes : sequence of int or None
        Claimed classes to analyse (None = all); other samples get NaN scores.
    """

    name = "lgm-likelihood"
    needs_lgm = True
    per_class = True
    inductive = True
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        "alpha": [FRACTION],
        "scale": [Options(SCALES)],
    }

    def __init__(
        self,
        *,
        alpha: float = 0.001,
        scale: str = "robust",
        threshold: Threshold | str | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(threshold=threshold, classes=classes)
        self._set_params(alpha=alpha, scale=scale)

    def _score(self, evidence: Evidence) -> ScoreSet:
        stats = lgm_claimed_likelihood(evidence, "data")
        labels = evidence.labels("data")
        self.classes_ = self.analysed_classes(evidence)
        scores = self._score_new(evidence, "data")
        analysed = ~torch.isnan(scores)
        critical = chi2_critical(self.alpha, stats.dim)
        spread = torch.ones(evidence.num_classes, dtype=torch.float64)
        if self.scale == "robust":
            spread = class_spread(stats.mahalanobis_sq, labels, evidence.num_classes, stats.dim)
        rule_flags = analysed & (stats.mahalanobis_sq > critical * spread[labels])
        extras = {
            "feature_dim": stats.dim,
            "chi2_critical": critical,
            "seed_threshold_T": math.exp(-0.5 * critical),
            "class_spread": spread.tolist(),
        }
        return ScoreSet(scores, rule_flags, self._holdout_reference(evidence), extras=extras)

    def _score_new(self, evidence: Evidence, part: Part) -> Tensor:
        """−log p(f(x) | claimed y) under the LGM head, for samples of the analysed classes."""
        stats = lgm_claimed_likelihood(evidence, part)
        labels = evidence.labels(part)
        analysed = torch.isin(labels, torch.tensor(self.classes_, dtype=torch.long))
        scores = per_class_scores(len(labels))
        scores[analysed] = stats.neg_log_likelihood[analysed]
        return scores
