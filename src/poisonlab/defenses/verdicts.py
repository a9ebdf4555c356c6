"""Per-class verdicts: does this claimed class look poisoned, with a p-value and a calibrated cut.

The clustering and ranking defenses score every sample *within* its claimed class, and their
papers' rules then cut every class (the smaller 2-means cluster, the 1.5·ε·n top scores), so a
clean class loses a third or a tenth of its samples. Activation Clustering's paper (Chen et al.
2018, arXiv:1811.03728) decides per class whether it is poisoned at all; here that decision is made
the same way for every detector that ranks within classes, from its scores alone, with a p-value
under a stated null. A class judged clean flags nothing.

**The test: a break in the upper tail.** A poisoned class holds a group of samples that share one
cause (a trigger) and score together, above the clean majority: between the k-th and the
(k + 1)-th highest score there is a gap much larger than the gaps around it. With the class's
scores sorted s₍₁₎ ≥ s₍₂₎ ≥ … ≥ s₍ₙ₎, the normalised spacings

    D_k = k · (s₍ₖ₎ − s₍ₖ₊₁₎),  k = 1 … k_max

are independent and identically exponential when the upper tail of the clean scores is
exponential (Rényi's representation of order statistics: the same fact behind the Hill estimator
of tail indices), and shrink towards the top for lighter, Gaussian-like tails. The statistic is
the largest spacing of a group of at least ``min_group`` samples and at most ``max_fraction`` of
the class, in units of the class's own typical spacing (the median of the D_k, a robust scale the
break itself barely moves):

    T = max_{k_min ≤ k ≤ k_max} D_k / (median_j D_j / ln 2).

Its null distribution, clean scores with an exponential upper tail, depends only on
(k_min, k_max) and is simulated exactly from i.i.d. Exp(1) spacings (``null_draws`` draws, a fixed
seed), giving the p-value. Lighter tails make the test conservative. The suspect samples of a
class judged poisoned are its k̂ highest scores, k̂ the argmax.

**Calibration.** A class is called poisoned when its p-value is at most ``alpha / classes`` (a
Bonferroni correction over the classes tested), so on a clean data set the chance that a detector
names any class is at most ``alpha`` when the null holds; the default ``alpha = 0.05``. The
false-alarm rate actually met on clean classes of real models (digits, Fashion-MNIST, several
seeds) is measured in bench/results/verdicts.md and documented in docs/methods.md.

Limits: a poison group that does not stand apart in the detector's scores (poisons spread through
the clean tail) gives no break, and the class is judged clean even when the ranking (AUROC) is good;
a class where more than ``max_fraction`` of the samples are poisons is outside the test, as it is
outside every minority-cluster rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from poisonlab.validation import FRACTION, POSITIVE_INT, ConstraintList, Interval, check_param

TEST = "upper-tail break (Rényi spacings, exponential-tail null)"
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_GROUP = 3
DEFAULT_MAX_FRACTION = 0.35
NULL_DRAWS = 20000
MIN_NEIGHBOURS = 10
_NULL_SEED = 20181103  # fixed: the p-value of a score vector never depends on run or order

VERDICT_CONSTRAINTS: dict[str, ConstraintList] = {
    "alpha": [FRACTION],
    "min_group": [POSITIVE_INT],
    "max_fraction": [Interval(Real, 0, 0.5, closed="right")],
}


@dataclass(frozen=True)
class ClassVerdict:
    """One claimed class's verdict from one detector.

    label : the claimed class
    poisoned : True when the p-value is at most ``level``
    statistic : T, the largest normalised spacing of the upper tail (module docstring)
    p_value : P(T ≥ observed) under the exponential-tail null
    level : the cut the p-value was compared with (``alpha`` / classes tested)
    suspects : k̂, the number of highest scores above the break (flagged only when poisoned)
    cutoff : the lowest score above the break (the cut-off in effect when poisoned)
    n : samples of the class that were scored
    """

    label: int
    poisoned: bool
    statistic: float
    p_value: float
    level: float
    suspects: int
    cutoff: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class BreakTest:
    """The per-class test (module docstring) with its settings, checked when built."""

    alpha: float = DEFAULT_ALPHA
    min_group: int = DEFAULT_MIN_GROUP
    max_fraction: float = DEFAULT_MAX_FRACTION

    def __post_init__(self) -> None:
        for key, constraints in VERDICT_CONSTRAINTS.items():
            check_param("verdict", key, getattr(self, key), constraints)

    def window(self, n: int) -> tuple[int, int] | None:
        """(k_min, k_max) for a class of ``n`` scores, or None when it is too small to test."""
        k_max = math.floor(self.max_fraction * n)
        if k_max < self.min_group + 2 or n < k_max + 1:
            return None
        return self.min_group, k_max

    def statistic(self, scores: Tensor) -> tuple[float, int, float] | None:
        """(T, k̂, lowest score above the break) of one class's finite scores, or None."""
        s = torch.sort(scores.double(), descending=True).values
        window = self.window(len(s))
        if window is None:
            return None
        k_min, k_max = window
        reach = min(2 * k_max, len(s) - 1)  # spacings below k_max serve as neighbours only
        k = torch.arange(1, reach + 1, dtype=torch.float64)
        spacings = k * (s[:reach] - s[1 : reach + 1])
        t, j = local_max(spacings, k_min, k_max)
        return t, j, float(s[j - 1])

    def verdict(self, label: int, scores: Tensor, tested: int) -> ClassVerdict:
        """The verdict on one class among ``tested`` classes (Bonferroni level alpha / tested)."""
        level = self.alpha / max(tested, 1)
        found = self.statistic(scores)
        if found is None:
            return ClassVerdict(label, False, math.nan, 1.0, level, 0, None, len(scores))
        t, k, cutoff = found
        k_min, k_max = self.window(len(scores)) or (0, 0)
        p = null_p_value(t, k_min, k_max, min(2 * k_max, len(scores) - 1))
        return ClassVerdict(label, p <= level, t, p, level, k, cutoff, len(scores))


def neighbours(k: int, reach: int) -> tuple[int, int]:
    """0-based slice [lo, hi) of the spacings that set the scale of D_k: the ``max(k, 10)`` next
    ones below the break (j = k + 1 …), clipped to ``reach``."""
    return k, min(reach, k + max(k, MIN_NEIGHBOURS))


def local_scales(spacings: Tensor, k_max: int) -> Tensor:
    """θ̂_k for k = 1 … k_max: the median of the spacings just below the break, over ln 2.

    Local, because the spacings of a smooth density drift with k; from below only, because the
    spacings above a break are those of the poison group, not of the clean tail. Gaussian-like
    tails (spacings growing with k) make the test conservative.
    """
    out = torch.empty(k_max, dtype=spacings.dtype)
    for k in range(1, k_max + 1):
        lo, hi = neighbours(k, len(spacings))
        out[k - 1] = spacings[lo:hi].median() / math.log(2.0) if hi > lo else math.nan
    return out


def local_max(spacings: Tensor, k_min: int, k_max: int) -> tuple[float, int]:
    """(max_{k_min ≤ k ≤ k_max} D_k / θ̂_k, the 1-based k of the max); ties give 0."""
    scales = local_scales(spacings, k_max)[k_min - 1 :]
    ratio = spacings[k_min - 1 : k_max] / scales
    ratio = torch.where(scales > 0, ratio, torch.zeros_like(ratio))
    ratio = torch.nan_to_num(ratio, nan=0.0, posinf=0.0)
    j = int(torch.argmax(ratio))
    return float(ratio[j]), j + k_min


@lru_cache(maxsize=256)
def null_statistics(k_min: int, k_max: int, reach: int, draws: int = NULL_DRAWS) -> Tensor:
    """Sorted draws of T under the null: i.i.d. Exp(1) spacings D_1 … D_reach (fixed seed)."""
    generator = torch.Generator().manual_seed(_NULL_SEED + 7919 * reach + 104729 * k_max + k_min)
    d = torch.empty(draws, reach, dtype=torch.float64).exponential_(generator=generator)
    ratios = torch.empty(draws, k_max - k_min + 1, dtype=torch.float64)
    for k in range(k_min, k_max + 1):
        lo, hi = neighbours(k, reach)
        ratios[:, k - k_min] = d[:, k - 1] / (d[:, lo:hi].median(dim=1).values / math.log(2.0))
    return torch.sort(ratios.max(dim=1).values).values


def null_p_value(t: float, k_min: int, k_max: int, reach: int) -> float:
    """(1 + #{null T ≥ t}) / (1 + draws): a valid Monte-Carlo p-value, never 0."""
    null = null_statistics(k_min, k_max, reach)
    above = len(null) - int(torch.searchsorted(null, torch.tensor([t], dtype=torch.float64)))
    return (1 + above) / (1 + len(null))


def class_verdicts(
    scores: Tensor, labels: Tensor, test: BreakTest | None = None
) -> tuple[tuple[ClassVerdict, ...], Tensor]:
    """Verdicts on every analysed class (finite scores) and the flags they imply.

    Returns the verdicts in class order and bool (N,) flags: the k̂ highest scores of each class
    judged poisoned, nothing elsewhere.
    """
    test = test or BreakTest()
    analysed = ~torch.isnan(scores)
    classes = labels[analysed].unique().tolist()
    flags = torch.zeros(len(scores), dtype=torch.bool)
    verdicts = []
    for c in classes:
        idx = (analysed & (labels == c)).nonzero().flatten()
        verdict = test.verdict(int(c), scores[idx], len(classes))
        verdicts.append(verdict)
        if verdict.poisoned:
            order = torch.sort(scores[idx].double(), descending=True, stable=True).indices
            flags[idx[order[: verdict.suspects]]] = True
    return tuple(verdicts), flags
