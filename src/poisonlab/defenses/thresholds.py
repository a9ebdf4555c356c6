"""Thresholds turn scores into flags, separately from the scores themselves.

A detector's scores never depend on the threshold; the threshold decides which samples are
flagged: the per-class verdict (the default, :class:`VerdictRule`: nothing in a class judged clean,
the samples above the break and their trailing members in a class judged poisoned,
:mod:`poisonlab.defenses.verdicts`; the paper's rule for detectors that give no verdicts), the
paper's own rule, a contamination quantile, a target false-positive rate on clean held-out data,
or a fixed value. The last three are the user's and override the verdicts.

Thresholds are checked when they are built, before any model is trained: a fraction must lie in
(0, 1) and a fixed value must be a finite number (``value:nan`` would flag nothing and ``value:inf``
nothing or everything, silently), and the messages give the valid range
(:mod:`poisonlab.validation`). A threshold that needs clean held-out scores says so in
``needs_reference``, so callers refuse it without a held-out set up front instead of after
training (:func:`poisonlab.workflows.scan.scan`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, ClassVar

import torch
from torch import Tensor

from poisonlab.errors import ConfigError, did_you_mean
from poisonlab.validation import FRACTION, Boolean, Interval, ParameterError, check_param

FINITE = Interval(Real, None, None)

#: Threshold records (``{"rule": ...}``) of the user's cuts, which decide the flags and override
#: the class verdicts (``contamination:F``, ``fpr:F``, ``value:V``).
USER_CUT_RULES = ("contamination", "target-fpr", "value")


def overrides_verdicts(record: Any) -> bool:
    """Whether a detector's threshold record is a user's cut (its class verdicts decide nothing)."""
    return isinstance(record, dict) and record.get("rule") in USER_CUT_RULES


@dataclass(frozen=True)
class ScoreSet:
    """A detector's output before thresholding.

    scores : float64 (N,), higher = more suspicious; NaN for samples the detector did not analyse.
    rule_flags : bool (N,), the paper's own decision rule.
    reference : float64 (M,) or None, scores of clean held-out samples (inductive detectors only).
    extras : JSON-ready details of the run (per-class reports, fitted settings...), kept in the
        :class:`~poisonlab.defenses.base.DetectionResult`.
    verdicts, verdict_flags : per-class verdicts and the flags they imply, filled by
        :meth:`~poisonlab.defenses.base.Detector.fit` for detectors that give verdicts (None
        for the others); detectors do not set them.
    verdict_scores : float64 (N,) or None, what the per-class verdict reads instead of
        ``scores`` (same NaN pattern; its suspects are the highest of these), for detectors whose
        best within-class statistic is not the score they rank across classes with.
    """

    scores: Tensor
    rule_flags: Tensor
    reference: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    verdicts: tuple[Any, ...] = ()
    verdict_flags: Tensor | None = None
    verdict_scores: Tensor | None = None


def top_k(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` highest ``scores``; among equal scores the lower position wins.

    ``torch.topk`` does not promise an order among ties, so flags could change with the backend;
    a stable descending sort does.
    """
    k = max(0, min(int(k), len(scores)))
    return torch.sort(scores, descending=True, stable=True).indices[:k]


class Threshold(ABC):
    """Decides which scored samples are flagged.

    ``needs_reference`` is True for thresholds that cut on the scores of clean held-out samples
    (:class:`TargetFPR`): they need a held-out set, which callers check before any work starts.
    """

    needs_reference: ClassVar[bool] = False

    @abstractmethod
    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """(bool flags (N,), JSON-ready description of the cut) for analysed samples."""

    def describe(self) -> str:
        """Short text for tables, e.g. ``contamination:0.1``."""
        return type(self).__name__


@dataclass(frozen=True)
class VerdictRule(Threshold):
    """The default: flags from the per-class verdicts at family-wise level ``alpha``.

    A class judged clean flags nothing; a class judged poisoned flags its samples above the break
    and their trailing members (:mod:`poisonlab.defenses.verdicts`, "The cut"). Detectors that
    give no verdicts (they do not rank within classes) keep their paper's rule, and say so.
    """

    alpha: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_param("verdict", "alpha", self.alpha, [FRACTION]))

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The verdict flags, or the rule flags when the detector gives no verdicts."""
        if result.verdict_flags is None:
            return result.rule_flags.clone(), {"rule": "paper", "why": "gives no class verdicts"}
        poisoned = [v.label for v in result.verdicts if v.poisoned]
        return result.verdict_flags.clone(), {
            "rule": "verdict",
            "alpha": self.alpha,
            "poisoned_classes": poisoned,
        }

    def describe(self) -> str:
        """``verdict`` (``verdict:ALPHA`` for another level than 0.05)."""
        return "verdict" if self.alpha == 0.05 else f"verdict:{self.alpha:g}"


class PaperRule(Threshold):
    """The detector's own rule from its paper (smaller cluster, 1.5·ε·n removal, χ² cut...)."""

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The rule flags as they are."""
        return result.rule_flags.clone(), {"rule": "paper"}

    def describe(self) -> str:
        """``paper``."""
        return "paper"


@dataclass(frozen=True)
class Contamination(Threshold):
    """Flag the top ``fraction`` of analysed samples by score, per class or over all samples."""

    fraction: float
    per_class: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "fraction", check_param("contamination", "fraction", self.fraction, [FRACTION])
        )
        object.__setattr__(
            self,
            "per_class",
            check_param("contamination", "per_class", self.per_class, [Boolean()]),
        )

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Top-k per group with k = round(fraction · group size); ties broken by index."""
        scores = result.scores
        analysed = ~torch.isnan(scores)
        flags = torch.zeros_like(analysed)
        groups = labels.unique().tolist() if self.per_class else [None]
        for group in groups:
            members = analysed if group is None else analysed & (labels == group)
            idx = members.nonzero().flatten()
            flags[idx[top_k(scores[idx], round(self.fraction * len(idx)))]] = True
        return flags, {
            "rule": "contamination",
            "fraction": self.fraction,
            "per_class": self.per_class,
        }

    def describe(self) -> str:
        """``contamination:F``."""
        return f"contamination:{self.fraction:g}"


@dataclass(frozen=True)
class TargetFPR(Threshold):
    """Cut at the (1 − fpr) quantile of the scores of clean held-out samples."""

    fpr: float
    needs_reference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "fpr", check_param("target-fpr", "fpr", self.fpr, [FRACTION]))

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Flags scores strictly above the clean quantile."""
        reference = result.reference
        if reference is None or len(reference) == 0:
            raise ConfigError(
                "a target false-positive rate needs clean held-out scores: give a clean "
                "held-out set (holdout) and use a detector that can score new data"
            )
        cut = float(torch.quantile(reference.double(), 1.0 - self.fpr))
        scores = torch.nan_to_num(result.scores, nan=-math.inf)
        return scores > cut, {"rule": "target-fpr", "fpr": self.fpr, "cutoff": cut}

    def describe(self) -> str:
        """``fpr:F``."""
        return f"fpr:{self.fpr:g}"


@dataclass(frozen=True)
class FixedValue(Threshold):
    """Flag every score above a fixed value."""

    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_param("value", "value", self.value, [FINITE]))

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Flags scores strictly above ``value``."""
        scores = torch.nan_to_num(result.scores, nan=-math.inf)
        return scores > self.value, {"rule": "value", "cutoff": self.value}

    def describe(self) -> str:
        """``value:V``."""
        return f"value:{self.value:g}"


THRESHOLD_FORMS = (
    "verdict (or verdict:A with A in (0, 1), the family-wise level), paper, contamination:F with "
    "F in (0, 1), fpr:F with F in (0, 1) (needs clean held-out data) or value:V with V a finite "
    "number"
)


def parse_threshold(spec: str) -> Threshold:
    """Parse ``verdict``, ``verdict:0.01``, ``paper``, ``contamination:0.1``, ``fpr:0.05`` or
    ``value:3.5`` (CLI and configs).

    Raises
    ------
    ConfigError
        Naming the text, what was wrong with it and every accepted form with its range.
    """
    if not isinstance(spec, str):
        raise ConfigError(f"threshold must be text ({THRESHOLD_FORMS}), got {spec!r}")
    name, sep, arg = spec.strip().partition(":")
    name, arg = name.strip(), arg.strip()
    if name == "paper" and not sep:
        return PaperRule()
    if name == "verdict" and not sep:
        return VerdictRule()
    kinds: dict[str, Any] = {
        "verdict": VerdictRule,
        "contamination": Contamination,
        "fpr": TargetFPR,
        "value": FixedValue,
    }
    if name not in kinds or not arg:
        hint = did_you_mean(name, ["verdict", "paper", *kinds], suffix=sep + arg)
        raise ConfigError(f"threshold {spec!r} not understood{hint}; use {THRESHOLD_FORMS}")
    try:
        number = float(arg)
    except ValueError:
        raise ConfigError(
            f"threshold {spec!r}: {arg!r} is not a number; use {THRESHOLD_FORMS}"
        ) from None
    try:
        return kinds[name](number)
    except ParameterError as exc:
        raise ConfigError(f"threshold {spec!r}: {name} must be {exc.expected}, got {arg}") from None
