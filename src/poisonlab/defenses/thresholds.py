"""Thresholds turn scores into flags, separately from the scores themselves.

A detector's scores never depend on the threshold; the threshold decides which samples are
flagged: the paper's own rule (the default), a contamination quantile, a target false-positive rate
on clean held-out data, or a fixed value.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from poisonlab.errors import ConfigError


@dataclass(frozen=True)
class ScoreSet:
    """A detector's output before thresholding.

    scores : float64 (N,), higher = more suspicious; NaN for samples the detector did not analyse.
    rule_flags : bool (N,), the paper's own decision rule.
    reference : float64 (M,) or None, scores of clean held-out samples (inductive detectors only).
    """

    scores: Tensor
    rule_flags: Tensor
    reference: Tensor | None = None


def top_k(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` highest ``scores``; among equal scores the lower position wins.

    ``torch.topk`` does not promise an order among ties, so flags could change with the backend;
    a stable descending sort does.
    """
    k = max(0, min(int(k), len(scores)))
    return torch.sort(scores, descending=True, stable=True).indices[:k]


class Threshold(ABC):
    """Decides which scored samples are flagged."""

    @abstractmethod
    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """(bool flags (N,), JSON-ready description of the cut) for analysed samples."""

    def describe(self) -> str:
        """Short text for tables, e.g. ``contamination:0.1``."""
        return type(self).__name__


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
        if not 0.0 < self.fraction < 1.0:
            raise ConfigError(f"contamination must lie in (0, 1), got {self.fraction}")

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

    def __post_init__(self) -> None:
        if not 0.0 < self.fpr < 1.0:
            raise ConfigError(f"target false-positive rate must lie in (0, 1), got {self.fpr}")

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Flags scores strictly above the clean quantile."""
        reference = result.reference
        if reference is None or len(reference) == 0:
            raise ConfigError(
                "a target false-positive rate needs clean held-out scores: give --holdout "
                "(and use a detector that can score new data)"
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

    def flag(self, result: ScoreSet, labels: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Flags scores strictly above ``value``."""
        scores = torch.nan_to_num(result.scores, nan=-math.inf)
        return scores > self.value, {"rule": "value", "cutoff": self.value}

    def describe(self) -> str:
        """``value:V``."""
        return f"value:{self.value:g}"


def parse_threshold(spec: str) -> Threshold:
    """Parse ``paper``, ``contamination:0.1``, ``fpr:0.05`` or ``value:3.5`` (CLI and configs)."""
    name, _, arg = spec.partition(":")
    try:
        if name == "paper" and not arg:
            return PaperRule()
        if name == "contamination":
            return Contamination(float(arg))
        if name == "fpr":
            return TargetFPR(float(arg))
        if name == "value":
            return FixedValue(float(arg))
    except ValueError:
        pass
    raise ConfigError(
        f"threshold {spec!r} not understood; use paper, contamination:F, fpr:F or value:V"
    )
