"""DeepFeatures: class-conditional Gaussians on several layers, fitted on clean held-out data.

Subedar et al. 2019 (Subedar et al., "Deep Probabilistic Models to Detect Data Poisoning Attacks")
after Ahuja et al. 2019, "Probabilistic modeling of deep features for out-of-distribution and
adversarial detection" (arXiv:1909.11786); definitions in docs/methods.md#deep-features.

The model was trained on the suspect (possibly poisoned) data, but the densities are fitted on
half of a **clean** held-out set, so they anchor what clean features look like. For each layer l
(conv maps globally average-pooled) and class c, N(μ_lc, Σ_lc) gives LL_lc(x). Per layer a
statistic m_l(x) is taken, z-normalised with its mean and standard deviation on the fit split,
and fused into one suspicion score u(x) = −Σ_l z_l(x):

* ``fusion="claimed"`` (default): m_l = LL_{l,y}, the likelihood under the claimed label y. A
  dirty-label backdoor sample keeps the features of its true class in the early layers while
  claiming another class, so its claimed-class likelihood is very low there.
* ``fusion="max"``: m_l = max_c LL_lc, docs/methods.md#deep-features's label-free variant (an
  input unlike any clean class is suspicious).

``claimed`` is the default because it separated poisons better on Fashion-MNIST with BadNets at 10%
all-to-all (cnn-small, 60,000 images: training-set AUROC 99.97% vs 98.08% for ``max``; every fusion
× covariance pair is in bench/results/scan.md, from ``python -m bench scan``). Full covariance + εI
(docs/methods.md#deep-features) stays the default: Ledoit–Wolf tied it there (99.97%) and was below
it on a 6,000-image subset (99.32% vs 99.74%).

Inductive: :meth:`~poisonlab.defenses.base.Detector.score_samples` scores new samples with the
fitted densities (``model_``) and :meth:`DeepFeatures.predict` classifies them. The other half of
the held-out set is scored by the same densities and returned as the clean ``reference`` (no
sample is both fitted and used as a reference). The paper gives no flagging rule;
the default rule here flags samples scoring above the (1 − ``rule_fpr``) quantile of the clean
reference scores, i.e. an expected false-positive rate of ``rule_fpr`` on clean data.

:func:`classify_max_likelihood` is the paper's "DF" classifier, ĉ = argmax_c Σ_l LL_lc.

Limits: every claimed class must have at least two held-out samples in the fit half; with fewer
samples per class than feature dimensions the full covariance is mostly regulariser (use
``covariance="ledoit-wolf"``); a poison that reproduces clean features of its claimed class in
every probed layer is invisible to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.data.splits import split_indices
from poisonlab.defenses.base import Detector, register_detector
from poisonlab.defenses.evidence import Evidence, Part
from poisonlab.defenses.gaussian import (
    COVARIANCES,
    ClassGaussians,
    fit_class_gaussians,
    gaussian_log_likelihood,
)
from poisonlab.defenses.thresholds import ScoreSet, Threshold
from poisonlab.errors import ConfigError
from poisonlab.ranges import counted
from poisonlab.validation import (
    FRACTION,
    LAYER,
    POSITIVE,
    SEED,
    ConstraintList,
    Items,
    Options,
)

FUSIONS = ("claimed", "max")


@dataclass(frozen=True, eq=False)
class DeepFeaturesModel:
    """Fitted per-layer class densities and the z-normalisation of each layer's statistic.

    layers : names of the layers, in the order activations must be given
    densities : one ClassGaussians per layer
    fusion : "claimed" or "max"
    z_mean, z_std : float64 (L,), mean and std of m_l on the fit split
    """

    layers: tuple[str, ...]
    densities: tuple[ClassGaussians, ...]
    fusion: str
    z_mean: Tensor
    z_std: Tensor

    def log_likelihoods(self, activations: Sequence[Tensor]) -> Tensor:
        """LL_lc for every layer, sample and class, float64 (L, N, K)."""
        return layer_log_likelihoods(self.densities, activations)

    def scores(self, activations: Sequence[Tensor], labels: Tensor) -> Tensor:
        """Fused suspicion u = −Σ_l z_l, float64 (N,); higher = more suspicious."""
        stats = layer_statistics(self.log_likelihoods(activations), labels, self.fusion)
        return fuse_statistics(stats, self.z_mean, self.z_std)

    def classify(self, activations: Sequence[Tensor]) -> Tensor:
        """Maximum-likelihood class argmax_c Σ_l LL_lc, int64 (N,)."""
        return classify_max_likelihood(self.log_likelihoods(activations))


def layer_log_likelihoods(
    densities: Sequence[ClassGaussians], activations: Sequence[Tensor]
) -> Tensor:
    """Stack gaussian_log_likelihood over layers: float64 (L, N, K)."""
    if len(densities) != len(activations):
        raise ValueError(f"{len(activations)} activation tensors for {len(densities)} layers")
    return torch.stack(
        [gaussian_log_likelihood(a, g) for a, g in zip(activations, densities, strict=True)]
    )


def layer_statistics(log_likelihoods: Tensor, labels: Tensor, fusion: str) -> Tensor:
    """m_l per layer and sample, float64 (L, N): max over classes, or the claimed class's LL."""
    if fusion == "max":
        return log_likelihoods.max(dim=2).values
    if fusion == "claimed":
        index = labels.long().cpu()[None, :, None].expand(log_likelihoods.shape[0], -1, 1)
        return log_likelihoods.gather(2, index).squeeze(2)
    raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def fuse_statistics(stats: Tensor, z_mean: Tensor, z_std: Tensor) -> Tensor:
    """u = −Σ_l (m_l − mean_l) / std_l, float64 (N,)."""
    return -((stats - z_mean[:, None]) / z_std[:, None]).sum(0)


def classify_max_likelihood(log_likelihoods: Tensor) -> Tensor:
    """The paper's "DF" classifier: argmax_c Σ_l LL_lc with equal priors.

    Parameters
    ----------
    log_likelihoods : Tensor of shape (L, N, K) or (N, K)

    Returns
    -------
    Tensor of shape (N,), int64
    """
    total = log_likelihoods.sum(0) if log_likelihoods.ndim == 3 else log_likelihoods
    return total.argmax(1)


def fit_deep_features(
    activations: Sequence[Tensor],
    labels: Tensor,
    num_classes: int,
    *,
    layers: Sequence[str] | None = None,
    covariance: str = "full",
    fusion: str = "claimed",
    eps: float = 1e-6,
) -> DeepFeaturesModel:
    """Fit class Gaussians per layer on clean samples and the z-normalisation of m_l.

    Parameters
    ----------
    activations : sequence of Tensor of shape (N, D_l)
        One (pooled) activation matrix per layer for the same N clean samples.
    labels : Tensor of shape (N,), int64
    num_classes : int
    layers : names to record (default ``layer0, layer1, ...``)
    covariance : {"full", "ledoit-wolf"}
    fusion : {"claimed", "max"}
    eps : float
        Relative covariance regulariser (see :func:`fit_class_gaussians`).

    Returns
    -------
    DeepFeaturesModel
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if not activations:
        raise ValueError("DeepFeatures needs at least one layer")
    names = (
        tuple(layers) if layers is not None else tuple(f"layer{i}" for i in range(len(activations)))
    )
    densities = tuple(
        fit_class_gaussians(a, labels, num_classes, covariance=covariance, eps=eps)
        for a in activations
    )
    stats = layer_statistics(layer_log_likelihoods(densities, activations), labels, fusion)
    finite = torch.isfinite(stats).all(0)
    z_mean = stats[:, finite].mean(1)
    z_std = stats[:, finite].std(1).nan_to_num(1.0).clamp_min(1e-12)
    return DeepFeaturesModel(names, densities, fusion, z_mean, z_std)


@register_detector("deep-features")
class DeepFeatures(Detector):
    """Per-layer class-conditional Gaussians fitted on clean held-out data (Subedar et al. 2019).

    Parameters
    ----------
    layers : sequence of str or None
        Layer names to model (default: the model's ``probe_layers``; conv maps are pooled).
    covariance : {"full", "ledoit-wolf"}
        Full sample covariance + ε·I (ε = eps·tr(Σ)/d), or Ledoit–Wolf shrinkage.
    fusion : {"claimed", "max"}
        Per-layer statistic: claimed-class log-likelihood, or the maximum over classes.
    fit_fraction : float in (0, 1)
        Part of the held-out set the densities are fitted on (stratified); the rest is the clean
        reference (Subedar et al. 2019 fits on one half and evaluates on the other).
    rule_fpr : float in (0, 1)
        The default rule flags scores above the (1 − rule_fpr) quantile of the reference scores.
    eps : float
        Relative covariance regulariser.
    seed : int
        Seeds the stratified fit/reference split of the held-out set.
    threshold : Threshold, its text (``fpr:0.05``...) or None
        How flags are decided (default: the rule above).
    classes : None
        DeepFeatures scores every class at once; giving classes is a ConfigError.
    """

    name = "deep-features"
    needs_holdout = True
    inductive = True
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        "layers": [None, Items(LAYER, unique=True, what="a list of distinct layer names")],
        "covariance": [Options(COVARIANCES)],
        "fusion": [Options(FUSIONS)],
        "fit_fraction": [FRACTION],
        "rule_fpr": [FRACTION],
        "eps": [POSITIVE],
        "seed": [SEED],
    }

    def __init__(
        self,
        *,
        layers: Sequence[str] | None = None,
        covariance: str = "full",
        fusion: str = "claimed",
        fit_fraction: float = 0.5,
        rule_fpr: float = 0.01,
        eps: float = 1e-6,
        seed: int = 0,
        threshold: Threshold | str | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(threshold=threshold, classes=classes)
        self._set_params(
            layers=layers,
            covariance=covariance,
            fusion=fusion,
            fit_fraction=fit_fraction,
            rule_fpr=rule_fpr,
            eps=eps,
            seed=seed,
        )

    def _split_holdout(self, evidence: Evidence) -> tuple[Tensor, Tensor]:
        """Stratified (fit, reference) indices into the held-out set, checked per class."""
        labels = evidence.labels("holdout")
        fit_idx, ref_idx = split_indices(
            labels, (self.fit_fraction, 1.0 - self.fit_fraction), self.seed
        )
        fit_counts = torch.bincount(labels[fit_idx], minlength=evidence.num_classes)
        for c in evidence.labels("data").unique().tolist():
            if int(fit_counts[c]) < 2:
                raise ConfigError(
                    f"deep-features: the held-out set has {counted(int((labels == c).sum()), 'sample')} of "
                    f"class {c}; it needs at least 2 in its fit part ({self.fit_fraction:g} of them)"
                )
        return fit_idx, ref_idx

    def _score(self, evidence: Evidence) -> ScoreSet:
        layers = self.layers or tuple(evidence.require_model().probe_layers)
        fit_idx, ref_idx = self._split_holdout(evidence)
        held = [evidence.activations(layer, "holdout") for layer in layers]
        held_labels = evidence.labels("holdout")
        fitted = fit_deep_features(
            [a[fit_idx] for a in held],
            held_labels[fit_idx],
            evidence.num_classes,
            layers=layers,
            covariance=self.covariance,
            fusion=self.fusion,
            eps=self.eps,
        )
        self.model_ = fitted
        scores = self._score_new(evidence, "data")
        ref_labels = held_labels[ref_idx]
        usable = fitted.densities[0].fitted[ref_labels]
        ref_acts = [a[ref_idx][usable] for a in held]
        reference = fitted.scores(ref_acts, ref_labels[usable])
        cutoff = float(torch.quantile(reference, 1.0 - self.rule_fpr)) if len(reference) else None
        rule_flags = (
            scores > cutoff if cutoff is not None else torch.zeros_like(scores, dtype=torch.bool)
        )
        predicted = fitted.classify(ref_acts)
        extras = {
            "layers": list(layers),
            "fit_samples": len(fit_idx),
            "reference_samples": len(reference),
            "rule_cutoff": cutoff,
            "df_accuracy_reference": float((predicted == ref_labels[usable]).double().mean())
            if len(reference)
            else None,
        }
        return ScoreSet(scores, rule_flags, reference, extras=extras)

    def _score_new(self, evidence: Evidence, part: Part) -> Tensor:
        """Fused suspicion of the samples of ``part`` under the fitted densities."""
        acts = [evidence.activations(layer, part) for layer in self.model_.layers]
        return self.model_.scores(acts, evidence.labels(part))

    def predict(self, data: ImageDataset | Evidence) -> Tensor:
        """The paper's DF classifier on new samples: ĉ = argmax_c Σ_l LL_lc, int64 (N,).

        ``data`` as for :meth:`~poisonlab.defenses.base.Detector.score_samples`.
        """
        evidence = self._new_evidence(data, "predict")
        return self.model_.classify([evidence.activations(layer) for layer in self.model_.layers])
