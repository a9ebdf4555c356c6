"""Per-class verdicts: does this claimed class look poisoned, with a p-value and a calibrated cut.

The clustering and ranking defenses score every sample *within* its claimed class, and their
papers' rules then cut every class (the smaller 2-means cluster, the 1.5·ε·n top scores), so a
clean class loses a third or a tenth of its samples. Activation Clustering's paper (Chen et al.
2018, arXiv:1811.03728) decides per class whether it is poisoned at all; here that decision is made
the same way for every detector that ranks within classes, from its scores alone, with a p-value
under a stated null. A class judged clean flags nothing.

**The test: a break in the upper tail.** A poisoned class holds a group of samples that share one
cause (a trigger) and score together, above the clean majority: below the group the scores thin
out, so the gaps between consecutive order statistics there are much larger than the gaps just
below. With the class's scores sorted s₍₁₎ ≥ s₍₂₎ ≥ … ≥ s₍ₙ₎, the normalised spacings

    D_k = k · (s₍ₖ₎ − s₍ₖ₊₁₎),  k = 1 … k_max

are independent and identically exponential when the upper tail of the clean scores is
exponential (Rényi's representation of order statistics: the same fact behind the Hill estimator
of tail indices), and shrink towards the top for lighter, Gaussian-like tails. A group's lowest
members often trail into the gap, so no single spacing stands out while a few consecutive ones
do: for every window of w = 1, 2, 4 or 8 consecutive spacings starting at k (k ≥ ``min_group``,
ending at most at k_max = ⌊``max_fraction`` · n⌋) the statistic is the window's sum over the mean
of the m = min(max(k, 10), 40) spacings just below it,

    t_{k,w} = (D_k + … + D_{k+w−1}) / ((D_{k+w} + … + D_{k+w+m−1}) / m).

Under the null the two sums are independent Γ(w) and Γ(m) variables, so t/(t + m) is Beta(w, m)
and each window's p-value is exact, with no simulation. Scale from below only, because the
spacings above a break are those of the poison group; at most 40 of them, because the density
of real scores changes with depth (a χ²₁-like τ rises towards 0) and a deeper scale makes the
test anti-conservative. The class's p-value is Bonferroni's over the L windows tried,
min(1, L · min p_{k,w}), valid whatever their dependence.

**The cut.** The suspect samples of a class judged poisoned are its k̂ highest scores, k̂ the
position of the largest spacing of the best window (at most k_max): the group above the break,
which the detector's confirmation and the held-out check judge. The best window spans the gap
under the group, and the group's lowest members trail into it: once those tests have kept the
class named, it also loses its *trailing members* (``trailing`` of its verdict,
:func:`take_trailing`), the samples down to the deepest spacing of the best window (at most
k_max) that is itself a gap: at least
``trail_gap`` = 8 times the mean of the m spacings below the window (one exponential spacing does
so with probability (1 + 8/m)⁻ᵐ, 3·10⁻³ at m = 10 and 7·10⁻⁴ at m = 40; e⁻⁸ only with the mean
known) and at least :data:`TRAIL_SHARE` (a fifth) of the window's largest spacing; the largest
spacing when no deeper one is. Cutting only at the largest spacing, as earlier versions did, left
the trailing members with the clean samples: replayed on every saved run of the verdict bench
(bench/results/verdicts.md, "The cut takes the group's trailing members"), it removed 61 of
Fashion-MNIST's 67 single-pixel poisons where this cut removes 65, and 17 of 20 on 8×8 digits where
it removes 19. The price is paid in clean samples: over the 73 saved runs the combined decision
removes 32 more poisons (6,302 against 6,270) and 123 more clean samples (454 against 331), and 43
of the 206 named classes gained clean samples only (17 gained poisons): clean spacings pass the
factor far more often than an exponential tail would. The share keeps a lone clean outlier just
above the bulk (a spacing of 9 times the mean there, a sixth of the break above it) with its class.
The tests judge the group above the break alone, as they were calibrated: when the trailing
members also went into the confirming retraining, the retrained model changed with them, and in
one all-to-all run a class whose confirmation was close to its threshold flipped to legitimate
(35 of its group read as its own label against 53 as pullovers, where the group above the break
alone gave 26 against 59; T = 0.5). The valley test has no trailing members: its windows run
tens of samples into the valley, where the deepest large spacing can lie among the clean
samples.

**The valley test** (:meth:`BreakTest.valley`). Between the two clusters of a split, read as
silhouettes (Heatmap Clustering's scores), the scores fall through a valley tens of samples wide
rather than a gap, and under a group of a third of the class the valley runs on past
``max_fraction`` (35%). There the windows are w = 1, 2, 4, …, 64 wide and may end at
⌊(``max_fraction`` + 0.05) · n⌋ (``gap_margin``), the cut k̂ still at most k_max. Measured:
the default windows judged a third of a class of poisons clean in Heatmap Clustering's
silhouettes (Schulth et al. 2022, Table 1 setting, p 0.06–1 on three victims; docs/methods.md),
and named 0 of 30 simulated two-cluster classes with a third planted at 4 standard deviations,
the valley test 27. The margin is kept small because a clean class's own 2-means split has its
valley at 40–50% of the class: windows a full 32 spacings past k_max named a third of 300 clean
150-sample splits; with the 5% margin the rate stays at the level (tests/defenses). It is not the
default for every detector: on the Fisher projections Activation Clustering's verdict reads, the
wider windows also find the genuine modes of clean classes (digits and Fashion-MNIST runs of
bench/results/verdicts.md: 87 instead of 60 of 687 clean classes named before the confirmation).

**The second stage, for all-to-all attacks** (``escalation`` of :func:`class_verdicts`; every
detector's :meth:`~poisonlab.defenses.base.Detector.fit` passes the valley test, but Heatmap
Clustering's, whose first test already is the valley test). When the first stage names at least
half of the K classes (:func:`escalation_quorum`, and at least 2), the attack is evidently not
one-to-one, and every class is tested again with the valley test, Holm's procedure over all K; a
class keeps the verdict of the stage that names it, or, when both or neither do, the one with the
smaller p-value (which is what a combination of detectors then reads); the detector's
confirmation runs once over the classes of both stages. A class whose second-stage verdict is
kept is cut at that test's largest spacing, without trailing members. In Fashion-MNIST
all-to-all attacks Activation Clustering's split held one class's poisons with clean samples of
the class that trail into the gap below them (the trousers of seeds 0 and 1) or mixed among them
(the coats of seed 2), default p 0.65–1, which the wider windows read as one break (p ≤
1.6·10⁻⁶ to 6·10⁻⁴; the tenth class named in every model: bench/results/verdicts.md). A class
the first stage names only at Holm's last steps is tested again too: in one such model the
coats were named at p 0.022, too weak for a combination of three detectors at Holm's last level,
while the valley test gives 4·10⁻¹⁹ (until 7 Dec 2026 only the classes the first stage left were
tested again, and the coats went unnamed: 90.0% of the poisons removed).
False alarms: with fewer poisoned classes than the quorum, the second stage runs only after the
first has named at least one clean class, so the procedure's family-wise rate is the first
stage's (at most ``alpha``), and the verdicts on clean data and one-to-one attacks are those of
the first stage (every saved bench run: at most 3 of 10 classes named by any detector's first
stage outside all-to-all attacks, against a quorum of 5). Otherwise a clean class is named only
if one of the two procedures, each of family-wise rate at most ``alpha`` over all K classes,
names it, so the rate is at most 2·``alpha``; a combination that reads the smaller of a class's
two p-values is bounded the same way (Holm's argument applied to each stage's p-values).

**Calibration.** The classes are tested together with Holm's step-down procedure (Holm 1979,
"A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6:65–70): with the
K p-values sorted, p₍₁₎ ≤ … ≤ p₍K₎, class (j) is called poisoned when p₍ᵢ₎ ≤ ``alpha`` / (K − i + 1)
for every i ≤ j. The first step is Bonferroni's ``alpha / K``, so on a clean data set the chance
that a detector names any class is at most ``alpha`` when the null holds (the default
``alpha = 0.05``), as with Bonferroni; once a class is named, the others are compared with
``alpha / (K − 1)``, ``alpha / (K − 2)``, …, so when many classes are poisoned (all-to-all) the
last ones are not held to the level of K tests. The
false-alarm rate actually met on clean classes of real models (digits, Fashion-MNIST, several
seeds) is measured in bench/results/verdicts.md and documented in docs/methods.md.

**Small classes.** The test's null is met on clean classes of 160–600 samples, not on small
ones: with the scan's own model trained on clean Fashion-MNIST subsets (three detectors, two to
four disjoint subsets per size), Activation Clustering's first stage reached p ≤ ``alpha``/K in
7 of 20 classes of 30 samples and 5 of 40 of 60, against 1 of 40 of 100, 0 of 30 of 150 and 1 of
30 of 200 (raw clustering: 3 of 20 at 30, 1 to 2 in 30–40 above; Spectral Signatures: none at
any size), and the combined decision named a class in both runs of 30 per class
(bench/results/verdicts.md, "Small classes"). The cause is not the Fisher projection fitted on
the split it reads: Gaussian classes of 30–300 samples in 64 dimensions, reduced to 10 and split
the same way, gave p ≤ 0.005 in 1 of 240. It is the model: trained on a few hundred images, it
leaves genuine sub-modes unfitted (sandals that look like ankle boots, shirts like T-shirts;
half their samples misclassified), 2-means isolates them, and the confirming retraining without
them reads them as the neighbouring class. The 2-means detectors (Activation Clustering and raw
clustering, :class:`~poisonlab.defenses.clustering.TwoMeansDetector`) therefore judge only
classes of at least :data:`MIN_CLASS_SIZE` = 100 samples (``min_samples``); a smaller class's
verdict says "not tested" with p-value 1 and flags nothing. Spectral Signatures and Heatmap
Clustering keep ``min_samples`` 0. Every class of the verdict bench has 174 samples or more, so
none of its decisions changes.

**With a clean held-out set** (``Evidence(holdout=...)``), every detector that can score new samples
on its verdict's scale checks each class it names after its own confirmation: a group that the
class's clean held-out samples hold at about the same rate is a genuine mode, and the class is
cleared (:mod:`poisonlab.defenses.holdout_check`).

Limits: a poison group that does not stand apart in the detector's scores (poisons spread through
the clean tail) gives no break, and the class is judged clean even when the ranking (AUROC) is good;
a class where more than ``max_fraction`` of the samples are poisons is outside the test, as it is
outside every minority-cluster rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from poisonlab.validation import (
    FRACTION,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    ConstraintList,
    Interval,
    Items,
    check_param,
)

TEST = "upper-tail break (windows of Rényi spacings, exponential-tail null)"
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_GROUP = 3
DEFAULT_MAX_FRACTION = 0.35
TRAIL_GAP = 8.0
"""A spacing of the best window at least this many times the mean spacing below the window (and
at least :data:`TRAIL_SHARE` of the window's largest) is a gap, and the cut goes under the
deepest such spacing (module docstring, "The cut")."""
TRAIL_SHARE = 0.2
MIN_NEIGHBOURS = 10
MAX_NEIGHBOURS = 40
WINDOWS = (1, 2, 4, 8)
VALLEY_WINDOWS = (1, 2, 4, 8, 16, 32, 64)
VALLEY_MARGIN = 0.05
ESCALATION_SHARE = 0.5
MIN_CLASS_SIZE = 100
"""Smallest class the 2-means detectors (Activation Clustering, raw clustering) judge (module
docstring, "Small classes"); 0 in :class:`BreakTest`'s default, which judges every class."""

VERDICT_CONSTRAINTS: dict[str, ConstraintList] = {
    "alpha": [FRACTION],
    "min_group": [POSITIVE_INT],
    "max_fraction": [Interval(Real, 0, 0.5, closed="right")],
    "widths": [Items(POSITIVE_INT, unique=True, what="window widths (distinct integers >= 1)")],
    "gap_margin": [Interval(Real, 0, 0.5, closed="left")],
    "min_samples": [NON_NEGATIVE_INT],
    "trail_gap": [Interval(Real, 1, None), None],
}


@dataclass(frozen=True)
class ClassVerdict:
    """One claimed class's verdict from one detector.

    label : the claimed class
    poisoned : True when Holm's procedure reaches and rejects the class (its p-value within
        ``level``, and every smaller one within its own) and neither the confirmation nor the
        held-out check cleared it
    statistic : t of the most significant window of spacings (module docstring)
    p_value : the class's p-value under the exponential-tail null (Bonferroni over windows)
    level : the cut the p-value was compared with: Holm's ``alpha`` / (K − i + 1) for the class
        ranked i-th smallest p-value among the K analysed (a class not tested counts, with
        p-value 1; module docstring)
    suspects : k̂, the number of highest scores above the break (flagged only when poisoned);
        in a detector's result, a named class's trailing members too (``trailing``)
    cutoff : the lowest score above the break (the cut-off in effect when poisoned); in a
        detector's result, the last trailing member's when there are some
    n : samples of the class that were scored
    check : the confirmation a detector ran on a class the test named (e.g. exclusionary
        reclassification), None when none ran; a class it cleared has ``poisoned`` False
    stage : 1 for the detector's test, 2 when the second stage judged the class (module
        docstring, "The second stage"): the statistic, p-value and level are then its
    untested : why the class was not judged (p-value 1, never poisoned), e.g. "not tested: 30 <
        100 samples" below the test's ``min_samples`` (module docstring, "Small classes");
        None when the test ran
    holdout : the held-out check of a named class when a clean held-out set was given
        (:mod:`poisonlab.defenses.holdout_check`), None when none ran; a class whose group it
        found to be a genuine mode has ``poisoned`` False
    trailing : the group's trailing members below the break (module docstring, "The cut"): in
        a detector's result, how many of the ``suspects`` they are (added by
        :func:`take_trailing` once the class's tests kept it named, ``cutoff`` lowered to the
        last of them); straight from :func:`class_verdicts`, how many it would add
    """

    label: int
    poisoned: bool
    statistic: float
    p_value: float
    level: float
    suspects: int
    cutoff: float | None
    n: int
    check: dict[str, Any] | None = None
    stage: int = 1
    untested: str | None = None
    holdout: dict[str, Any] | None = None
    trailing: int = 0

    @property
    def genuine_mode(self) -> bool:
        """True when the held-out check found the class's group to be a genuine mode of the
        clean data (and so cleared the class)."""
        return bool(self.holdout and self.holdout.get("mode"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class BreakTest:
    """The per-class test (module docstring) with its settings, checked when built.

    ``widths`` are the window widths w tried; ``gap_margin`` lets a window run on below
    ``max_fraction`` of the class by that share of it (the cut k̂ stays within ``max_fraction``);
    a class of fewer than ``min_samples`` scores is not judged (module docstring, "Small
    classes"; :data:`MIN_CLASS_SIZE` for the 2-means detectors, 0 by default); ``trail_gap``
    finds the trailing members down to the best window's deepest gap (:data:`TRAIL_GAP`; None:
    none; module docstring, "The cut"). The defaults are
    the test every verdict-giving detector uses; :meth:`valley` is the test for scores with a
    valley instead of a gap under the group (silhouettes of a two-cluster split).
    """

    alpha: float = DEFAULT_ALPHA
    min_group: int = DEFAULT_MIN_GROUP
    max_fraction: float = DEFAULT_MAX_FRACTION
    widths: tuple[int, ...] = WINDOWS
    gap_margin: float = 0.0
    min_samples: int = 0
    trail_gap: float | None = TRAIL_GAP

    def __post_init__(self) -> None:
        for key, constraints in VERDICT_CONSTRAINTS.items():
            value = check_param("verdict", key, getattr(self, key), constraints)
            object.__setattr__(self, key, value)

    @classmethod
    def valley(cls, alpha: float = DEFAULT_ALPHA, *, min_samples: int = 0) -> BreakTest:
        """The test for silhouettes of a two-cluster split (Heatmap Clustering's scores):
        windows of up to 64 spacings (:data:`VALLEY_WINDOWS`) that may run on to
        ``max_fraction`` + :data:`VALLEY_MARGIN` of the class, cut at the best window's largest
        spacing (module docstring)."""
        return cls(
            alpha=alpha,
            widths=VALLEY_WINDOWS,
            gap_margin=VALLEY_MARGIN,
            min_samples=min_samples,
            trail_gap=None,
        )

    def window(self, n: int) -> tuple[int, int] | None:
        """(k_min, k_max) for a class of ``n`` scores, or None when it is too small to test."""
        k_max = math.floor(self.max_fraction * n)
        if k_max < self.min_group + 2 or n < k_max + 1:
            return None
        return self.min_group, k_max

    def gap_end(self, n: int) -> int:
        """The deepest spacing a window may reach in a class of ``n`` scores: the gap under a
        group of up to ``max_fraction`` of the class may run on to ``max_fraction`` +
        ``gap_margin`` of it (k_max itself with the default margin 0)."""
        return min(math.floor((self.max_fraction + self.gap_margin) * n), n - 1)

    def statistic(self, scores: Tensor) -> tuple[float, int, float, float, int] | None:
        """(t, k̂, lowest score above the break, p-value, k̂ with the trailing members) of one
        class's finite scores, or None (module docstring, "The cut")."""
        s = torch.sort(scores.double(), descending=True).values
        window = self.window(len(s))
        if window is None:
            return None
        k_min, k_max = window
        k_end = self.gap_end(len(s))
        reach = min(2 * k_end + max(self.widths), len(s) - 1)  # below k_end: scale only
        k = torch.arange(1, reach + 1, dtype=torch.float64)
        spacings = k * (s[:reach] - s[1 : reach + 1])
        p, t, cut, deep = _window_table(spacings, k_min, k_max, k_end, self.widths, self.trail_gap)
        if not len(p):
            return None
        best = int(torch.argmin(p))
        j = int(cut[best])
        trailing_end = max(j, int(deep[best]))
        return float(t[best]), j, float(s[j - 1]), min(1.0, len(p) * float(p[best])), trailing_end

    def verdict(self, label: int, scores: Tensor, tested: int) -> ClassVerdict:
        """The verdict on one class among ``tested`` classes at Bonferroni's level alpha / tested
        (the first step of Holm's procedure; :func:`class_verdicts` applies the rest)."""
        level = self.alpha / max(tested, 1)
        n = len(scores)
        if n < self.min_samples:
            reason = f"not tested: {n} < {self.min_samples} samples"
            return ClassVerdict(label, False, math.nan, 1.0, level, 0, None, n, untested=reason)
        found = self.statistic(scores)
        if found is None:
            reason = "not tested: too few samples for the test's windows"
            return ClassVerdict(label, False, math.nan, 1.0, level, 0, None, n, untested=reason)
        t, k, cutoff, p, deep = found
        return ClassVerdict(
            label, p <= level, t, p, level, k, cutoff, len(scores), trailing=deep - k
        )


def position_p_values(
    spacings: Tensor,
    k_min: int,
    k_max: int,
    k_end: int | None = None,
    widths: Sequence[int] = WINDOWS,
    *,
    trail_gap: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(p-value, ratio t, cut k̂) of every window (k, w) of the upper tail, flattened.

    For each width w in ``widths`` (default :data:`WINDOWS`) and start k (k_min ≤ k ≤ k_max,
    k + w − 1 ≤ k_end, which defaults to k_max), the window's spacings G = D_k + … + D_{k+w−1}
    are compared with the mean of the m = min(max(k, 10), 40) spacings just below it:
    t = G / (S / m). Under the null the D_j are i.i.d. exponential, G ~ Γ(w) and
    S ~ Γ(m) are independent, so G / (G + S) ~ Beta(w, m) and the window's p-value is exact:
    P(Beta(w, m) ≥ t / (t + m)). k̂ is the position of the window's largest spacing at
    most k_max; with ``trail_gap``, of its deepest spacing at most k_max that is at least
    ``trail_gap`` · S / m and :data:`TRAIL_SHARE` of the largest, when there is one (module
    docstring, "The cut").
    """
    p, t, cut, deep = _window_table(spacings, k_min, k_max, k_end, widths, trail_gap)
    return p, t, (cut if trail_gap is None else deep)


def _window_table(
    spacings: Tensor,
    k_min: int,
    k_max: int,
    k_end: int | None,
    widths: Sequence[int],
    trail_gap: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`position_p_values` with both cuts of every window in one pass: (p-value, t, cut
    at the largest spacing, cut under the deepest gap, the same without ``trail_gap``)."""
    from scipy.stats import beta

    reach = len(spacings)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), spacings.cumsum(0)])
    ps, ts, cuts, deeps = [], [], [], []
    k_end = k_max if k_end is None else max(k_end, k_max)
    for w in widths:
        last = min(k_max, k_end - w + 1, reach - w)  # 1-based starts k_min … last
        if last < k_min:
            continue
        k = torch.arange(k_min, last + 1)
        group = cumulative[k - 1 + w] - cumulative[k - 1]
        lo = k - 1 + w  # 0-based first neighbour
        hi = torch.clamp(lo + torch.clamp(k, min=MIN_NEIGHBOURS, max=MAX_NEIGHBOURS), max=reach)
        m = (hi - lo).double()
        below = cumulative[hi] - cumulative[lo]
        valid = (m > 0) & (below > 0)
        t = torch.where(valid, group * m / torch.where(valid, below, 1.0), 0.0)
        x = (t / (t + m.clamp(min=1))).numpy()
        p = torch.from_numpy(beta.sf(x, w, m.clamp(min=1).numpy()))
        p = torch.where(valid & (group > 0), p, torch.ones_like(p))
        windows = spacings.unfold(0, w, 1)[k - 1]  # row i: D_k … D_{k+w−1} for k = k_min + i
        beyond = k.unsqueeze(1) + torch.arange(w) > k_max  # cuts that would exceed k_max
        inside = windows.masked_fill(beyond, -math.inf)
        cut = inside.argmax(dim=1)
        deep = cut
        if trail_gap is not None:
            floor = torch.maximum(
                trail_gap * below / m.clamp(min=1), TRAIL_SHARE * inside.max(dim=1).values
            )
            gap = (windows >= floor.unsqueeze(1)) & ~beyond
            deepest = w - 1 - gap.flip(1).int().argmax(dim=1)  # last True in each row
            deep = torch.where(gap.any(dim=1) & valid, deepest, cut)
        ps.append(p)
        ts.append(t)
        cuts.append(k + cut)
        deeps.append(k + deep)
    if not ps:
        empty = torch.empty(0, dtype=torch.float64)
        none = torch.empty(0, dtype=torch.long)
        return empty, empty, none, none
    return torch.cat(ps), torch.cat(ts), torch.cat(cuts), torch.cat(deeps)


def holm(p_values: Sequence[float], alpha: float) -> tuple[list[float], list[bool]]:
    """Holm's step-down procedure (module docstring): each p-value's level and whether it is
    rejected, in the input order. The family-wise error rate is at most ``alpha`` whatever the
    dependence between the tests; ties keep their input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    levels = [0.0] * len(p_values)
    rejected = [False] * len(p_values)
    going = True
    for rank, i in enumerate(order):
        levels[i] = alpha / (len(p_values) - rank)
        going = going and p_values[i] <= levels[i]
        rejected[i] = going
    return levels, rejected


def escalation_quorum(tested: int) -> int:
    """Classes the first stage must name before the second stage runs (module docstring, "The
    second stage"): at least half of the ``tested`` classes, and at least 2."""
    return max(2, math.ceil(ESCALATION_SHARE * tested))


def class_verdicts(
    scores: Tensor,
    labels: Tensor,
    test: BreakTest | None = None,
    scale: Callable[[Tensor], Tensor] | None = None,
    escalation: BreakTest | None = None,
) -> tuple[tuple[ClassVerdict, ...], Tensor]:
    """Verdicts on every analysed class (finite scores) and the flags they imply.

    ``scale`` is an increasing map applied to the scores before the test (a detector's scores
    may have a tail the test reads better in another unit, e.g. Spectral Signatures' τ); the
    ranking, the suspects and the reported cut-offs stay those of ``scores``.

    The classes are judged together by Holm's step-down procedure at ``test.alpha``
    (:func:`holm`). With ``escalation`` (a test other than ``test``, e.g.
    :meth:`BreakTest.valley`), when this first stage names at least :func:`escalation_quorum`
    of the K classes, every class is judged again by ``escalation``, Holm's procedure over all K
    at ``escalation.alpha``, and keeps the verdict of the stage that names it, or of the two
    the one with the smaller p-value (module docstring, "The second stage"); a verdict of the
    second stage carries ``stage`` 2. Returns the verdicts in class order and bool (N,) flags:
    the k̂ highest scores of each class judged poisoned (the group above the break; its trailing
    members are added by :func:`take_trailing` after the class's tests), nothing elsewhere.
    """
    test = test or BreakTest()
    tested_scores = scale(scores) if scale is not None else scores
    analysed = ~torch.isnan(scores)
    classes = labels[analysed].unique().tolist()
    flags = torch.zeros(len(scores), dtype=torch.bool)
    verdicts = _holm_stage(scores, tested_scores, labels, classes, test, flags, stage=1)
    if escalation is not None and escalation != test:
        named = sum(v.poisoned for v in verdicts)
        if named >= escalation_quorum(len(classes)):
            second_flags = torch.zeros_like(flags)
            second = _holm_stage(
                scores, tested_scores, labels, classes, escalation, second_flags, stage=2
            )
            for i, (first, again) in enumerate(zip(verdicts, second, strict=True)):
                if _better(first, again) is again:
                    members = analysed & (labels == again.label)
                    flags[members] = second_flags[members]
                    verdicts[i] = again
    return tuple(verdicts), flags


def _better(first: ClassVerdict, again: ClassVerdict) -> ClassVerdict:
    """Of a class's two verdicts (module docstring, "The second stage"): the one that names it,
    and of two that agree, the one with the smaller p-value (the first on a tie)."""
    if first.poisoned != again.poisoned:
        return first if first.poisoned else again
    return again if again.p_value < first.p_value else first


def _holm_stage(
    scores: Tensor,
    tested_scores: Tensor,
    labels: Tensor,
    classes: Sequence[int],
    test: BreakTest,
    flags: Tensor,
    stage: int,
) -> list[ClassVerdict]:
    """``test`` on each of ``classes`` and Holm's procedure over them; sets ``flags`` (in place)
    on the k̂ highest scores of every class it names. Verdicts in the order of ``classes``."""
    analysed = ~torch.isnan(scores)
    verdicts = []
    members, orders = [], []
    for c in classes:
        idx = (analysed & (labels == c)).nonzero().flatten()
        verdict = replace(test.verdict(int(c), tested_scores[idx], len(classes)), stage=stage)
        order = torch.sort(scores[idx].double(), descending=True, stable=True).indices
        if verdict.cutoff is not None:
            verdict = replace(verdict, cutoff=float(scores[idx[order[verdict.suspects - 1]]]))
        verdicts.append(verdict)
        members.append(idx)
        orders.append(order)
    levels, rejected = holm([v.p_value for v in verdicts], test.alpha)
    for i, verdict in enumerate(verdicts):
        named = rejected[i] and verdict.suspects > 0  # an untested class (p = 1) is never named
        verdicts[i] = replace(verdict, level=levels[i], poisoned=named)
        if named:
            flags[members[i][orders[i][: verdict.suspects]]] = True
    return verdicts


def take_trailing(
    verdicts: Sequence[ClassVerdict], flags: Tensor, scores: Tensor, labels: Tensor
) -> tuple[tuple[ClassVerdict, ...], Tensor]:
    """Every class still named loses its trailing members too (module docstring, "The cut"):
    its ``suspects`` + ``trailing`` highest ``scores`` (the scores :func:`class_verdicts` read,
    NaN not analysed) are flagged, and its verdict's ``suspects`` and ``cutoff`` say so. A class
    cleared by its tests gets nothing; returns the verdicts and flags."""
    flags = flags.clone()
    out = []
    for verdict in verdicts:
        if verdict.poisoned and verdict.trailing > 0:
            k = verdict.suspects + verdict.trailing
            group = top_in_class(scores, labels, verdict.label, k)
            flags[group] = True
            verdict = replace(verdict, suspects=k, cutoff=float(scores[group[-1]]))
        out.append(verdict)
    return tuple(out), flags


def top_in_class(scores: Tensor, labels: Tensor, label: int, k: int) -> Tensor:
    """Indices of the ``k`` highest scores among the scored samples of class ``label``, highest
    first (ties in index order)."""
    idx = ((labels == label) & ~torch.isnan(scores)).nonzero().flatten()
    order = torch.sort(scores[idx].double(), descending=True, stable=True).indices
    return idx[order[:k]]
