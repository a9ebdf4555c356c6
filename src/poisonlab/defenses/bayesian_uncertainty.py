"""Uncertainty detectors of Subedar et al. 2019: a MOPED Bayesian copy scored by BALD, and the DNN
baseline.

Subedar et al. 2019 (Subedar, Ahuja, Krishnan, Ndiour, Tickoo, "Deep Probabilistic Models to Detect
Data Poisoning Attacks", Intel Labs) turns the model trained on the suspect data into a mean-field
Bayesian network (Flipout layers, MOPED priors; :mod:`poisonlab.models.bayesian`), fine-tunes it
with the ELBO on the same data, and scores inputs by BALD, the mutual information between the
prediction and the weights over T = 40 Monte-Carlo passes (:mod:`poisonlab.models.uncertainty`).
Definitions and pitfalls: docs/methods.md#bnn.

``bnn`` scores every suspect sample with BALD (``score="bald"``, default) or the predictive entropy
H(p̄) (``score="entropy"``); both come from the same passes, and the other one is in ``extras`` per
sample, beside the MC accuracy against the claimed labels. ``dnn-uncertainty`` is the deterministic
"DNN" row of Subedar et al. 2019's Tables 2–3, whose score the paper does not name: the softmax
entropy (poisonlab's choice, docs/methods.md#dnn-uncertainty; the default) or 1 − max-softmax.
Higher = more suspicious for all of them.

Rule (Subedar et al. 2019 flag nothing; they report AUPR/AUROC only). With a clean held-out set, the
scores of the held-out samples are the ``reference`` and the rule flags suspect samples scoring
above their (1 − ``rule_fpr``) quantile (default 0.99). Held-out samples were not trained on, so
their uncertainty is, if anything, higher than that of clean training samples: the realised
false-positive rate on the suspect data tends to be at or below ``rule_fpr``. Without a held-out set
there is no clean anchor, and the rule flags the ``rule_fraction`` (default 0.1, the paper's
smallest poison rate) most uncertain samples, an explicit contamination guess. Measured
(bench/results/bnn.md): poisons are shifted up in BALD, not tail outliers, so this cautious rule
flags almost none of them (0% of the poisons and 0% of the clean samples on digits and on
Fashion-MNIST at 10% BadNets); what BALD knows is in its ranking (AUROC 94 and 72 there). For
recall, use a ``Contamination`` or a looser ``TargetFPR`` threshold.

Limits and assumptions (Subedar et al. 2019's own conclusion): the BNN is fitted to the poisoned
data, so a backdoor it has learned well is predicted confidently and consistently; BALD separates
poisons only as far as they stay harder to fit than clean samples (Subedar et al. 2019: AUROC 83 on
MNIST at 10%, falling to chance at 50%). Cost: T forward passes of a network with Flipout layers
(about twice a deterministic pass each) plus the fine-tuning epochs. The Bayesian copy and its
passes are cached in the Evidence, so detectors with the same BNN settings share them; the caller's
model is never changed.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses.base import Detector, register_detector
from poisonlab.defenses.evidence import Evidence, Part
from poisonlab.defenses.thresholds import ScoreSet, Threshold, top_k
from poisonlab.models import bayesian
from poisonlab.models.bayesian import PRIOR_MEANS
from poisonlab.models.network import Network
from poisonlab.models.uncertainty import (
    entropy,
    max_softmax,
    mc_accuracy,
    mutual_information,
    predictive_entropy,
)
from poisonlab.seeding import derive_seed
from poisonlab.train.elbo import ElboHistory, fine_tune_elbo
from poisonlab.validation import (
    FRACTION,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    ConstraintList,
    Options,
)

BNN_SCORES = ("bald", "entropy")
DNN_SCORES = ("entropy", "max-softmax")


def reference_rule(
    scores: Tensor, reference: Tensor | None, *, fpr: float, fraction: float
) -> tuple[Tensor, dict[str, Any]]:
    """The default flags of the uncertainty detectors (module docstring).

    Parameters
    ----------
    scores : Tensor of shape (N,), float64
    reference : Tensor of shape (M,) or None
        Scores of clean held-out samples.
    fpr : float in (0, 1)
        Flag scores above the (1 − fpr) quantile of ``reference``.
    fraction : float in (0, 1)
        Without a reference: flag the round(fraction · N) highest scores (ties by index).

    Returns
    -------
    (bool flags (N,), JSON-ready description)
    """
    if reference is not None and len(reference) > 0:
        cutoff = float(torch.quantile(reference.double(), 1.0 - fpr))
        return scores > cutoff, {"rule": "held-out quantile", "fpr": fpr, "cutoff": cutoff}
    flags = torch.zeros(len(scores), dtype=torch.bool)
    flags[top_k(scores, round(fraction * len(scores)))] = True
    return flags, {"rule": "top fraction (no held-out set)", "fraction": fraction}


class _UncertaintyDetector(Detector):
    """Shared validation of the rule parameters; subclasses compute per-part scores.

    Inductive: the model (or its fitted Bayesian copy) scores any new sample.
    """

    needs_model = True
    inductive = True
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        "rule_fpr": [FRACTION],
        "rule_fraction": [FRACTION],
    }

    def __init__(
        self,
        *,
        rule_fpr: float,
        rule_fraction: float,
        threshold: Threshold | str | None,
        classes: Sequence[int] | None,
    ) -> None:
        super().__init__(threshold=threshold, classes=classes)
        self._set_params(rule_fpr=rule_fpr, rule_fraction=rule_fraction)

    @abstractmethod
    def _part_scores(self, evidence: Evidence, part: Part) -> Tensor:
        """Float64 (N,) scores of the suspect data or of the held-out set."""

    def _score_new(self, evidence: Evidence, part: Part) -> Tensor:
        return self._part_scores(evidence, part)

    def _scored(self, evidence: Evidence, extras: dict[str, Any]) -> ScoreSet:
        """Scores of the data, the held-out reference when there is one, and the rule's flags."""
        scores = self._part_scores(evidence, "data")
        reference = self._holdout_reference(evidence)
        flags, rule = reference_rule(
            scores, reference, fpr=self.rule_fpr, fraction=self.rule_fraction
        )
        return ScoreSet(scores, flags, reference, extras={"rule": rule, **extras})


@register_detector("bnn")
class BayesianUncertainty(_UncertaintyDetector):
    """BALD of a MOPED mean-field Flipout copy of the model, ELBO-fine-tuned (Subedar et al. 2019).

    Parameters
    ----------
    score : {"bald", "entropy"}
        BALD (mutual information, Subedar et al. 2019) or the predictive entropy H(p̄).
    samples : int
        T, Monte-Carlo passes per sample (Subedar et al. 2019: 40).
    delta : float > 0
        MOPED δ, posterior σ = δ·|w_MLE| at the start (MOPED paper: 0.1).
    prior_sigma : float > 0
        Prior standard deviation (bayesian-torch's default 1).
    prior_mean : {"mle", "zero"}
        Prior mean w_MLE (MOPED, default) or 0 (what ``dnn_to_bnn`` alone leaves).
    epochs : int >= 0
        ELBO fine-tuning epochs on the suspect data (0 = score the MOPED initialisation).
    lr, batch_size : float, int
        Adam learning rate and mini-batch size of the fine-tuning.
    kl_weight : float >= 0
        Multiplies the ELBO-consistent KL weight 1/N_train (sum-KL, see models.bayesian).
    replicas : int >= 1
        MC passes per forward call (copies of a batch share Flipout's Gaussian draw); 1 = all
        passes independent.
    rule_fpr, rule_fraction : float in (0, 1)
        The default rule (module docstring).
    seed : int
        Seeds the fine-tuning and the passes.
    threshold : Threshold, its text, or None (the rule above)
    """

    name = "bnn"
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        **_UncertaintyDetector._parameter_constraints,
        "score": [Options(BNN_SCORES)],
        "samples": [POSITIVE_INT],
        "delta": [POSITIVE],
        "prior_sigma": [POSITIVE],
        "prior_mean": [Options(PRIOR_MEANS)],
        "epochs": [NON_NEGATIVE_INT],
        "lr": [POSITIVE],
        "batch_size": [POSITIVE_INT],
        "kl_weight": [NON_NEGATIVE],
        "replicas": [POSITIVE_INT],
        "seed": [SEED],
    }

    def __init__(
        self,
        *,
        score: str = "bald",
        samples: int = 40,
        delta: float = 0.1,
        prior_sigma: float = 1.0,
        prior_mean: str = "mle",
        epochs: int = 3,
        lr: float = 1e-3,
        batch_size: int = 128,
        kl_weight: float = 1.0,
        replicas: int = 1,
        rule_fpr: float = 0.01,
        rule_fraction: float = 0.1,
        seed: int = 0,
        threshold: Threshold | str | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            rule_fpr=rule_fpr, rule_fraction=rule_fraction, threshold=threshold, classes=classes
        )
        self._set_params(
            score=score,
            samples=samples,
            delta=delta,
            prior_sigma=prior_sigma,
            prior_mean=prior_mean,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            kl_weight=kl_weight,
            replicas=replicas,
            seed=seed,
        )

    def _bnn_key(self) -> tuple[Any, ...]:
        return (
            self.delta,
            self.prior_sigma,
            self.prior_mean,
            self.epochs,
            self.lr,
            self.batch_size,
            self.kl_weight,
            self.seed,
        )

    def bayesian_model(self, evidence: Evidence) -> tuple[Network, ElboHistory]:
        """The MOPED copy of the evidence's model, fine-tuned on its data (cached per settings)."""

        def build() -> tuple[Network, ElboHistory]:
            bnn = bayesian.to_bayesian(
                evidence.require_model(),
                delta=self.delta,
                prior_sigma=self.prior_sigma,
                prior_mean=self.prior_mean,
            )
            history = ElboHistory()
            if self.epochs:
                history = fine_tune_elbo(
                    bnn,
                    evidence.data,
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    lr=self.lr,
                    kl_weight=self.kl_weight,
                    seed=self.seed,
                )
            return bnn, history

        return evidence.cached(("bnn-model", self._bnn_key()), build)

    def mc_probabilities(self, evidence: Evidence, part: Part = "data") -> Tensor:
        """(T, N, K) MC probabilities of ``part`` under :meth:`bayesian_model` (cached)."""

        def compute() -> Tensor:
            bnn, _ = self.bayesian_model(evidence)
            return bayesian.mc_probabilities(
                bnn,
                evidence.dataset(part).images,
                samples=self.samples,
                batch_size=evidence.batch_size,
                replicas=self.replicas,
                seed=derive_seed(self.seed, "mc", part),
                description=f"BNN: {self.samples} MC passes ({part})",
            )

        key = ("mc-probs", self._bnn_key(), self.samples, self.replicas, part)
        return evidence.cached(key, compute)

    def _part_scores(self, evidence: Evidence, part: Part) -> Tensor:
        return self.scores_of(self.mc_probabilities(evidence, part))

    def _score_new(self, evidence: Evidence, part: Part) -> Tensor:
        """The fitted Evidence's held-out set from its cached passes; new samples under the
        fitted Bayesian copy (never a copy fine-tuned on the new samples)."""
        if part == "holdout":
            return self._part_scores(evidence, part)
        return self.scores_of(
            self.predict_mc(evidence.dataset(part), batch_size=evidence.batch_size)
        )

    def predict_mc(
        self, data: ImageDataset, *, stream: str = "new", batch_size: int = 256
    ) -> Tensor:
        """(T, N, K) Monte-Carlo probabilities of new samples under the fitted Bayesian copy.

        ``stream`` names the random stream of the weight draws (derived from ``seed``): sets
        scored under different names get independent draws, the same name repeats them.
        """
        bnn = getattr(self, "bnn_", None)
        if bnn is None:
            raise RuntimeError(f"{self.name}: call fit() before predict_mc()")
        return bayesian.mc_probabilities(
            bnn,
            data.images,
            samples=self.samples,
            batch_size=batch_size,
            replicas=self.replicas,
            seed=derive_seed(self.seed, "mc", stream),
        )

    def scores_of(self, probabilities: Tensor) -> Tensor:
        """The detector's score (BALD or predictive entropy) of (T, N, K) MC probabilities."""
        if self.score == "bald":
            return mutual_information(probabilities).cpu()
        return predictive_entropy(probabilities).cpu()

    def _score(self, evidence: Evidence) -> ScoreSet:
        probs = self.mc_probabilities(evidence, "data")
        other = predictive_entropy(probs) if self.score == "bald" else mutual_information(probs)
        bnn, history = self.bayesian_model(evidence)
        self.bnn_ = bnn
        return self._scored(
            evidence,
            {
                "predictive_entropy" if self.score == "bald" else "bald": other.tolist(),
                "mc_accuracy": mc_accuracy(probs, evidence.labels()),
                "holdout_mc_accuracy": mc_accuracy(
                    self.mc_probabilities(evidence, "holdout"), evidence.labels("holdout")
                )
                if evidence.holdout is not None
                else None,
                "elbo": history.to_dict(),
                "kl_weight_per_sample": self.kl_weight / len(evidence.data),
                "posterior_sigma_over_abs_mu": bayesian.posterior_sigma_ratio(bnn),
            },
        )


@register_detector("dnn-uncertainty")
class DeterministicUncertainty(_UncertaintyDetector):
    """Softmax uncertainty of the deterministic model: Subedar et al. 2019's "DNN" baseline.

    Parameters
    ----------
    score : {"entropy", "max-softmax"}
        Softmax entropy (poisonlab's choice for the paper's unnamed score) or 1 − max_k p_k.
    rule_fpr, rule_fraction : float in (0, 1)
        The default rule (module docstring).
    threshold : Threshold, its text, or None (the rule above)
    """

    name = "dnn-uncertainty"
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        **_UncertaintyDetector._parameter_constraints,
        "score": [Options(DNN_SCORES)],
    }

    def __init__(
        self,
        *,
        score: str = "entropy",
        rule_fpr: float = 0.01,
        rule_fraction: float = 0.1,
        threshold: Threshold | str | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            rule_fpr=rule_fpr, rule_fraction=rule_fraction, threshold=threshold, classes=classes
        )
        self._set_params(score=score)

    def probabilities(self, evidence: Evidence, part: Part = "data") -> Tensor:
        """Softmax probabilities (N, K) of the deterministic model in eval mode (cached)."""

        def compute() -> Tensor:
            # the Evidence's standard pass: shared with the activations other defenses read
            return torch.softmax(evidence.logits(part).double(), dim=-1)

        return evidence.cached(("softmax-probs", part), compute)

    def _part_scores(self, evidence: Evidence, part: Part) -> Tensor:
        probs = self.probabilities(evidence, part)
        return entropy(probs) if self.score == "entropy" else 1.0 - max_softmax(probs)

    def _score(self, evidence: Evidence) -> ScoreSet:
        probs = self.probabilities(evidence)
        accuracy = float((probs.argmax(1) == evidence.labels()).double().mean())
        return self._scored(evidence, {"accuracy": accuracy})
