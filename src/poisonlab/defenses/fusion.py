"""One combined decision from several detectors: which classes look poisoned, which samples go.

Every detector scores on its own scale (a separation in σ, a squared projection over its median,
an uncertainty...), so scores are never averaged as they are. The combination reads only the
*members*: the detectors that rank within classes and give per-class verdicts
(:mod:`poisonlab.defenses.verdicts`). Documented in docs/methods.md ("Verdicts and the combined
decision").

1. **Which classes look poisoned.** Each member gives class c a p-value p_{c,m} (taken as 1
   when the member's own confirmation, exclusionary reclassification for the clustering
   detectors and Spectral Signatures, found the group legitimate, or when the held-out check
   found it a genuine mode of the clean data, :mod:`poisonlab.defenses.holdout_check`; when
   the member's first stage named at least half of the classes, every class was tested again
   in the valley form, and p_{c,m} is that of the stage that named c, else the smaller of the
   two: :mod:`poisonlab.defenses.verdicts`, "The second stage"). The combined p-value is
   Bonferroni's min-p, p_c = min(1, M · min_m p_{c,m}), valid whatever the dependence between
   members (they read the same features, so Fisher's or Stouffer's independence assumption
   would not hold). The K classes tested are judged by Holm's step-down procedure on the p_c
   (Holm 1979; see :func:`poisonlab.defenses.verdicts.holm`): the smallest is compared with
   α / K, the next with α / (K − 1), and so on until one fails. Class c is named when it
   passes and a member that named c itself (after its own confirmation) has M · p_{c,m} within
   c's level: on a clean data set the chance that the scan names any class stays at most α
   (default 0.05) when each member's null holds, as with Bonferroni's α / K (with the members'
   second stage, plus the chance that a member's first stage names half of the classes, which
   no clean or one-to-one run of bench/results/verdicts.md came near), while in an all-to-all
   attack the last poisoned classes are not held to the level of K tests.
2. **Which samples of a named class go.** Among the members that named the class on their own
   (M · p_{c,m} within its level), the group most of them found is the one removed (two namers
   found the same group when they share at least half of the smaller of their groups; ties to
   the most significant namer, :func:`agreeing_namers`): a member whose group is another set of
   samples (a genuine mode its confirmation let through, beside the poison group the others
   found) named the class for that group. What goes is the group of the most significant of
   those namers: its k̂ samples above its break and their trailing members (its verdict's
   ``suspects``, :func:`~poisonlab.defenses.verdicts.take_trailing`), in the order its verdict
   read (its ``verdict_scores`` when it has them), so the cut and the order come from the same
   test. (Averaging the namers' rankings instead, as earlier versions did, let a less
   significant namer whose ranking spread the poisons move clean samples into the cut:
   docs/methods.md, "Combined decision".) Which classes are named does not depend on it. A
   class named by nobody loses nothing.

   The **combined score** of a sample (scores.csv, and what user thresholds cut) is the mean,
   over the members, of its within-class rank percentile (0 = least, 1 = most suspicious among
   the samples of its claimed class, ties averaged): Borda-count fusion, which needs no common
   scale.

A user threshold replaces both steps with a cut on the combined score: ``contamination:F`` (the
top F of each class), ``value:V`` (combined score above V, in [0, 1]) or ``fpr:F`` (above the
(1 − F) quantile of the combined scores of clean held-out samples: each held-out sample is scored
by every member through its inductive ``score_samples`` and placed among the training scores of
its claimed class, :func:`holdout_combined_score`). The union rule (removed
when any detector that ran flagged it) stays available as ``rule="union"``.

Detectors that give no verdicts are reported beside the decision, not mixed into it, each with
the reason (:data:`NOT_MEMBERS`): uncertainty scores rank the whole set and have no per-class
cut; the LGM likelihood filter targets feature-collision poisons, which sit far from their claimed
class, while dirty-label backdoor poisons the model has fitted look typical to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from poisonlab.defenses.base import DetectionResult
from poisonlab.defenses.thresholds import (
    PaperRule,
    ScoreSet,
    Threshold,
    VerdictRule,
    overrides_verdicts,
)
from poisonlab.defenses.verdicts import ClassVerdict, holm, top_in_class
from poisonlab.errors import ConfigError
from poisonlab.ranges import class_label, class_ranges, counted
from poisonlab.validation import InstanceOf, Items, check_param

RULES = ("verdict", "union")
NOT_MEMBERS = {
    "lgm-likelihood": (
        "feature-collision filter: flags samples unlike their claimed class; a dirty-label "
        "backdoor the model has fitted looks typical to it, so it is not part of a backdoor "
        "decision (its own flags are in its columns)"
    ),
    "bnn": "ranks uncertainty over the whole set; no per-class verdict (flags reported only)",
    "dnn-uncertainty": (
        "ranks uncertainty over the whole set; no per-class verdict (flags reported only)"
    ),
    "deep-features": "ranks the whole set against clean densities; no per-class verdict",
    "heatmap-clustering": (
        "its per-class verdict (the break test's valley form on its silhouettes) is measured on "
        "Schulth et al.'s Table 1 setting and simulations only, not on the verdict bench's clean "
        "and poisoned sets; its verdicts and flags are in its own columns"
    ),
}


def decision_members() -> list[str]:
    """The registered defenses that are members of the combined decision, in registry order: those
    that give per-class verdicts, less :data:`NOT_MEMBERS`. What a scan runs when no defense is
    named (``poisonlab scan`` without ``--defense``)."""
    from poisonlab.defenses import DETECTORS, detector_names

    return [n for n in detector_names() if DETECTORS.get(n).gives_verdicts and n not in NOT_MEMBERS]


def within_class_percentiles(scores: Tensor, labels: Tensor) -> Tensor:
    """Rank percentile of every score among the analysed scores of its class, float64 (N,).

    (rank − 1) / (n − 1) with average ranks for ties: the least suspicious sample of a class is
    0, the most suspicious 1; a class of one sample gets 0.5; NaN scores stay NaN.
    """
    from scipy.stats import rankdata

    out = torch.full((len(scores),), float("nan"), dtype=torch.float64)
    analysed = ~torch.isnan(scores)
    for c in labels[analysed].unique().tolist():
        members = (analysed & (labels == c)).nonzero().flatten()
        if len(members) == 1:
            out[members] = 0.5
            continue
        ranks = rankdata(scores[members].numpy(), method="average")
        out[members] = torch.from_numpy((ranks - 1.0) / (len(members) - 1.0))
    return out


def percentile_among(reference: Tensor, values: Tensor) -> Tensor:
    """Where each of ``values`` falls among ``reference`` on the (rank − 1) / (n − 1) scale of
    :func:`within_class_percentiles` (mid-rank for ties, clipped to [0, 1])."""
    ref = torch.sort(reference.double()).values
    n = len(ref)
    if n < 2:
        return torch.full((len(values),), 0.5, dtype=torch.float64)
    below = torch.searchsorted(ref, values.double(), right=False).double()
    at_or_below = torch.searchsorted(ref, values.double(), right=True).double()
    # a value equal to one reference score takes its rank; between two, the midpoint
    rank = (below + at_or_below) / 2.0 + 0.5  # 1-based, fractional between neighbours
    return ((rank - 1.0) / (n - 1.0)).clamp(0.0, 1.0)


def holdout_combined_score(
    results: Sequence[DetectionResult],
    labels: Tensor,
    held_scores: Sequence[Tensor],
    held_labels: Tensor,
) -> Tensor:
    """Combined scores of clean held-out samples: per member, the percentile of each held-out
    score among that member's training scores of the same claimed class, then the mean.

    ``held_scores[i]`` are member ``i``'s scores of the held-out samples (its ``score_samples``);
    samples of classes a member did not analyse are left out of its mean. Returns float64 (M,)
    with NaN where no member scored the sample.
    """
    stacked = torch.full((len(results), len(held_labels)), float("nan"), dtype=torch.float64)
    for i, (result, held) in enumerate(zip(results, held_scores, strict=True)):
        for c in held_labels.unique().tolist():
            train = result.scores[(labels == c) & result.analysed]
            rows = (held_labels == c) & ~torch.isnan(held)
            if len(train) and rows.any():
                stacked[i, rows] = percentile_among(train, held[rows])
    counts = (~torch.isnan(stacked)).sum(0)
    total = torch.nan_to_num(stacked, nan=0.0).sum(0)
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.nan)


def combined_score(results: Sequence[DetectionResult], labels: Tensor) -> Tensor:
    """Mean within-class rank percentile over ``results`` (NaN where none analysed a sample)."""
    if not results:
        return torch.full((len(labels),), float("nan"), dtype=torch.float64)
    stacked = torch.stack([within_class_percentiles(r.scores, labels) for r in results])
    counts = (~torch.isnan(stacked)).sum(0)
    total = torch.nan_to_num(stacked, nan=0.0).sum(0)
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.nan)


def effective_p(verdict: ClassVerdict) -> float:
    """The member's p-value for the combination: 1 when its own confirmation (e.g. exclusionary
    reclassification) found the named group legitimate or the held-out check found it a genuine
    mode, else the break test's."""
    if verdict.check is not None and verdict.check.get("legitimate"):
        return 1.0
    if verdict.genuine_mode:
        return 1.0
    return verdict.p_value


def suspect_group(result: DetectionResult, verdict: ClassVerdict, labels: Tensor) -> Tensor:
    """The member's group in the verdict's class: the indices of its ``verdict.suspects``
    highest verdict scores there (the samples above its break and, in a detector's result, their
    trailing members; in the order its verdicts use)."""
    return top_in_class(verdict_view(result).scores, labels, verdict.label, verdict.suspects)


def agreeing_namers(
    namers: Sequence[tuple[DetectionResult, ClassVerdict]], labels: Tensor
) -> list[tuple[DetectionResult, ClassVerdict]]:
    """The namers of one class (most significant first, each with its verdict on the class)
    that found the same group, the one most of them found.

    Two namers found the same group when they share at least half of the smaller of their
    groups (:func:`suspect_group`). For each namer, the namers that found its group are counted;
    the largest such set wins, ties to the most significant namer, and it is returned in the
    input order. Agreement is with that one namer's group, not a chain: two members of the set
    may share less than half of their own groups with each other. A member whose group is
    another set of samples of the class (e.g. a genuine mode its confirmation let through,
    beside the poison group the other members found) named the class for that group: averaged
    in, its ranking would mix the two groups in the cut.
    """
    groups = [set(suspect_group(r, v, labels).tolist()) for r, v in namers]

    def same(a: set[int], b: set[int]) -> bool:
        smaller = min(len(a), len(b))
        return a is b or (smaller > 0 and 2 * len(a & b) >= smaller)

    sets = [[j for j, other in enumerate(groups) if same(group, other)] for group in groups]
    best = max(range(len(namers)), key=lambda i: (len(sets[i]), -i))
    return [namers[j] for j in sets[best]]


def verdict_view(result: DetectionResult) -> DetectionResult:
    """The result with the scores its verdicts read (``verdict_scores``) in place of ``scores``:
    a named class's samples go in the order that found the break."""
    if result.verdict_scores is None:
        return result
    return replace(result, scores=result.verdict_scores)


@dataclass(frozen=True, eq=False, repr=False)
class CombinedDecision:
    """The combined decision of a scan (module docstring).

    score : float64 (N,), mean within-class rank percentile over the members (NaN: no member
        analysed the sample)
    removed : bool (N,), the samples the decision removes
    poisoned_classes : classes named poisoned (empty under a user threshold, with the union rule
        too, or when no member named one)
    rule : "verdict", "union" or the user threshold's text
    members : detectors whose scores and verdicts were combined
    excluded : detectors that ran but were left out of the decision, with the reason
    per_class : JSON-ready detail per class: combined p-value, who named it, removed, the
        cut-off (on the scale of the verdict scores of the namer whose group went), the namers
        that found that group, and the members whose held-out check cleared the class
        (``modes_found_by``)
    alpha : the family-wise level of the verdict rule

    It reads as a detector's result to :func:`poisonlab.metrics.detection.evaluate_detection`:
    ``scores`` is the combined score, ``flagged`` the removed samples and ``analysed`` the
    samples some member analysed (the union rule can also remove samples no member analysed,
    e.g. flags of a reported-only defense in classes the members skipped; they are left out).
    """

    score: Tensor
    removed: Tensor
    poisoned_classes: list[int]
    rule: str
    members: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    alpha: float = VerdictRule.alpha

    def __repr__(self) -> str:
        """The rule, what it removes and the classes it names on one line, e.g.
        ``CombinedDecision(rule verdict, 31 removed of 1828, classes named [8], members
        ['activation-clustering', ...])``: not every score and per-class record it holds."""
        return (
            f"CombinedDecision(rule {self.rule}, {int(self.removed.sum())} removed of "
            f"{self.removed.numel()}, classes named {self.poisoned_classes}, members "
            f"{self.members})"
        )

    @property
    def scores(self) -> Tensor:
        """The combined score, float64 (N,): what evaluate_detection ranks (AUROC, AUPR)."""
        return self.score

    @property
    def flagged(self) -> Tensor:
        """The removed samples, bool (N,): what evaluate_detection counts (TPR, TNR)."""
        return self.removed

    @property
    def analysed(self) -> Tensor:
        """bool (N,): the samples some member analysed (a finite combined score)."""
        return ~torch.isnan(self.score)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-sample tensors)."""
        return {
            "rule": self.rule,
            "alpha": self.alpha if self.rule == "verdict" else None,
            "members": self.members,
            "excluded": self.excluded,
            "poisoned_classes": self.poisoned_classes,
            "removed": int(self.removed.sum()),
            "kept": int((~self.removed).sum()),
            "per_class": self.per_class,
        }


_RESULTS = Items(
    InstanceOf(DetectionResult),
    min_length=0,
    what="a list of DetectionResults (detector.fit(evidence).result, one per detector)",
)
_LABELS = InstanceOf(Tensor, "the claimed labels, an int64 tensor (N,) (the data's .labels)")


def combine(
    results: Sequence[DetectionResult],
    labels: Tensor,
    *,
    rule: str = "verdict",
    threshold: Threshold | None = None,
    reference: Tensor | None = None,
) -> CombinedDecision:
    """The combined decision over the results of every detector that ran (module docstring).

    Parameters
    ----------
    results : every detector that ran; those with verdicts are the members
    labels : claimed labels, int64 (N,)
    rule : "verdict" (default) or "union" (removed when any detector flagged it)
    threshold : None, ``verdict`` (its ``alpha``) or ``paper`` keep the verdict rule;
        ``contamination:F``, ``value:V`` or ``fpr:F`` cut the combined score instead
    reference : combined scores of clean held-out samples (:func:`holdout_combined_score`),
        needed by ``fpr:F``

    Raises
    ------
    ConfigError
        For an unknown rule, or ``fpr:F`` without a reference.
    """
    if rule not in RULES:
        raise ConfigError(f"combination rule must be one of {', '.join(RULES)}, got {rule!r}")
    check_param("combine", "results", results, [_RESULTS])
    check_param("combine", "labels", labels, [_LABELS])
    members = [r for r in results if r.verdicts and r.detector not in NOT_MEMBERS]
    excluded = {
        r.detector: NOT_MEMBERS.get(r.detector, "gives no per-class verdict")
        for r in results
        if not any(r is m for m in members)
    }
    score = combined_score(members, labels)
    names = [r.detector for r in members]
    if rule == "union":
        removed = torch.zeros(len(labels), dtype=torch.bool)
        for r in results:
            removed |= r.flagged
        # a class is named by verdicts that made flags: not under a user's cut, which overrides them
        named = sorted(
            {c for r in results if not overrides_verdicts(r.threshold) for c in r.poisoned_classes}
        )
        return CombinedDecision(score, removed, named, "union", names, excluded)
    if threshold is not None and not isinstance(threshold, VerdictRule | PaperRule):
        return _user_cut(score, labels, threshold, names, excluded, reference)
    alpha = threshold.alpha if isinstance(threshold, VerdictRule) else VerdictRule.alpha
    return _verdict_rule(members, labels, score, alpha, excluded)


def _verdict_rule(
    members: Sequence[DetectionResult],
    labels: Tensor,
    score: Tensor,
    alpha: float,
    excluded: dict[str, str],
) -> CombinedDecision:
    removed = torch.zeros(len(labels), dtype=torch.bool)
    per_class: dict[str, dict[str, Any]] = {}
    named: list[int] = []
    m = max(len(members), 1)
    tested = sorted({v.label for r in members for v in r.verdicts})
    votes_of = {c: [(r, v) for r in members for v in r.verdicts if v.label == c] for c in tested}
    p_of = [min(1.0, m * min(effective_p(v) for _, v in votes_of[c])) for c in tested]
    levels, passed = holm(p_of, alpha)
    for c, p, level, passes in zip(tested, p_of, levels, passed, strict=True):
        namers = sorted(
            (v.p_value, r.detector, r, v)
            for r, v in votes_of[c]
            if passes and v.poisoned and m * effective_p(v) <= level
        )
        entry: dict[str, Any] = {
            "p_value": p,
            "level": level,
            "poisoned": bool(namers),
            "named_by": [name for _, name, _, _ in namers],
            "removed": 0,
            "cutoff": None,
        }
        untested = [r.detector for r, v in votes_of[c] if v.untested]
        if untested:  # members that did not judge the class (e.g. too few samples)
            entry["untested_by"] = untested
        modes = [r.detector for r, v in votes_of[c] if v.genuine_mode]
        if modes:  # members whose held-out check found their group to be a genuine mode
            entry["modes_found_by"] = modes
        if namers:
            named.append(c)
            ordering = agreeing_namers([(r, v) for _, _, r, v in namers], labels)
            first, verdict = ordering[0]  # the most significant namer of the group
            cut = suspect_group(first, verdict, labels)
            removed[cut] = True
            entry["removed"] = len(cut)
            entry["cutoff"] = verdict.cutoff
            entry["ordered_by"] = [first.detector]
            entry["group_found_by"] = [r.detector for r, _ in ordering]
        per_class[str(c)] = entry
    names = [r.detector for r in members]
    return CombinedDecision(score, removed, named, "verdict", names, excluded, per_class, alpha)


def _user_cut(
    score: Tensor,
    labels: Tensor,
    threshold: Threshold,
    members: list[str],
    excluded: dict[str, str],
    reference: Tensor | None,
) -> CombinedDecision:
    """A contamination, value or target-FPR threshold applied to the combined score."""
    if threshold.needs_reference and (reference is None or not len(reference)):
        raise ConfigError(
            f"threshold {threshold.describe()} cuts the combined score on clean held-out "
            "samples scored by the members; give a held-out set, or use verdict, "
            "contamination:F or value:V"
        )
    scored = ScoreSet(score, torch.zeros(len(score), dtype=torch.bool), reference)
    flags, _ = threshold.flag(scored, labels)
    removed = flags.bool() & ~torch.isnan(score)
    per_class: dict[str, dict[str, Any]] = {}
    for c in labels.unique().tolist():
        chosen = score[removed & (labels == c)]
        per_class[str(c)] = {
            "removed": len(chosen),
            "cutoff": float(chosen.min()) if len(chosen) else None,
        }
    return CombinedDecision(score, removed, [], threshold.describe(), members, excluded, per_class)


def verdict_sentence(decision: CombinedDecision, class_names: Sequence[str]) -> str:
    """The verdict in one line, e.g. "class 8 looks poisoned: 31 suspicious samples; classes
    0–7, 9 look clean".

    When several classes are named (an all-to-all attack names nearly all of them), the
    classes are given once as ranges and the per-class counts follow in brackets, "classes 0–3,
    5–9 look poisoned (613 suspicious samples: 0: 67, 1: 66, …); class 4 looks clean", instead
    of one clause per class: a sentence that stays readable wrapped at 80 columns. The class
    names and every per-class number are in the decision (summary.json's ``per_class``).
    Classes some members did not judge (too few samples, :class:`ClassVerdict` ``untested``)
    are named in brackets, "classes 0–9 look clean (too few samples for activation-clustering to
    judge classes 2, 5)"; classes no member judged are "not judged (too few samples)".
    """
    tested = sorted(int(c) for c in decision.per_class)
    if decision.rule != "verdict":
        return (
            f"{counted(int(decision.removed.sum()), 'sample')} removed by the {decision.rule} rule "
            "(no class verdict)"
        )
    if not tested:
        return "no defense of the combined decision ran"
    named = decision.poisoned_classes
    clean = [c for c in tested if c not in named]
    parts = []
    removed = {c: int(decision.per_class[str(c)]["removed"]) for c in named}
    if len(named) == 1:
        (c,) = named
        parts.append(
            f"class {class_label(c, class_names)} looks poisoned: {counted(removed[c], 'suspicious sample')}"
        )
    elif named:
        counts = ", ".join(f"{c}: {n}" for c, n in removed.items())
        parts.append(
            f"{_classes(named)} look poisoned ({counted(sum(removed.values()), 'suspicious sample')}: "
            f"{counts})"
        )
    members = len(decision.members)
    skipped = {c: decision.per_class[str(c)].get("untested_by", []) for c in clean}
    unjudged = [c for c in clean if members and len(skipped[c]) >= members]
    clean = [c for c in clean if c not in unjudged]
    if clean:
        verb = "looks" if len(clean) == 1 else "look"
        partly = [c for c in clean if skipped[c]]
        note = f" ({_few(partly, skipped)})" if partly else ""
        parts.append(f"{_classes(clean)} {verb} clean{note}")
    if unjudged:
        parts.append(f"{_classes(unjudged)} not judged (too few samples)")
    return "; ".join(parts)


def _few(classes: Sequence[int], skipped: dict[int, list[str]]) -> str:
    """The note on clean-looking classes some members left untested (ClassVerdict.untested),
    grouped by member set: "too few samples for activation-clustering to judge classes 2, 5"."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for c in classes:
        groups.setdefault(tuple(skipped[c]), []).append(c)
    return "; ".join(
        f"too few samples for {', '.join(names)} to judge {_classes(cs)}"
        for names, cs in groups.items()
    )


def _classes(classes: Sequence[int]) -> str:
    """The words for some classes: ``class 4``, ``classes 0–3, 5–9`` (class_ranges)."""
    return ("class " if len(classes) == 1 else "classes ") + class_ranges(classes)
