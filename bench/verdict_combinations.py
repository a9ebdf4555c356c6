"""Other ways of combining the members' per-class p-values, judged on saved bench runs.

``python -m bench verdicts --replay DIR --combinations`` reads the runs ``--save DIR`` kept and,
for every class, the p-values the combination reads (:func:`poisonlab.defenses.fusion.effective_p`:
1 when a member's own confirmation cleared its group). Each rule below merges the M member
p-values of a class into one; the classes of a run are then judged by Holm's step-down procedure
at α = 0.05, and a class passing its step is named only when a member named it on its own (after
its confirmation), as in the library's decision. The library's rule is Bonferroni's min-p with
the namer's own M·p within the level (``fusion.combine``); the others are what that choice was
measured against (bench/results/verdicts.md):

- Simes (1986): min_i M·p₍ᵢ₎ / i; valid under positive dependence.
- Vovk & Wang (2020, arXiv:1212.4966): e × the geometric mean, 2 × the arithmetic mean; valid
  under any dependence.
- Fisher: P(χ²_{2M} ≥ −2 Σ ln p); exact for independent members.
- Brown (1975): Fisher's statistic against a scaled χ² matching its variance under dependence,
  the covariance of −2 ln p from each pair's correlation ρ by Kost & McDermott's (2002)
  polynomial, ρ the members' within-class Spearman correlation of their verdict scores (an
  estimate, not a guarantee).
- Stouffer: Φ̄(Σ Φ̄⁻¹(p) / √M); Cauchy combination (Liu & Xie 2020, arXiv:1808.09011):
  ½ − arctan(mean tan((½ − p)π)) / π. Both send p = 1 to −∞.

Bench code only: nothing here is used by poisonlab.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import chi2, norm, spearmanr

from poisonlab.defenses.fusion import effective_p
from poisonlab.defenses.verdicts import ClassVerdict, holm

ALPHA = 0.05
TINY = 1e-300


def _fisher_statistic(ps: Sequence[float]) -> float:
    return -2.0 * sum(math.log(max(p, TINY)) for p in ps)


def bonferroni(ps: Sequence[float], rho: np.ndarray) -> float:
    return min(1.0, len(ps) * min(ps))


def simes(ps: Sequence[float], rho: np.ndarray) -> float:
    s = sorted(ps)
    return min(1.0, min(len(s) * p / (i + 1) for i, p in enumerate(s)))


def geometric(ps: Sequence[float], rho: np.ndarray) -> float:
    return min(1.0, math.e * math.exp(-_fisher_statistic(ps) / (2 * len(ps))))


def arithmetic(ps: Sequence[float], rho: np.ndarray) -> float:
    return min(1.0, 2.0 * sum(ps) / len(ps))


def fisher(ps: Sequence[float], rho: np.ndarray) -> float:
    return float(chi2.sf(_fisher_statistic(ps), 2 * len(ps)))


def brown(ps: Sequence[float], rho: np.ndarray) -> float:
    """Fisher's statistic X against c·χ²_f with E X = 2M and Var X = 4M + 2·Σ_{i<j} cov_ij,
    cov_ij ≈ 3.263ρ + 0.710ρ² + 0.027ρ³ (Kost & McDermott 2002), ρ_ij ≥ 0 each pair's."""
    m = len(ps)
    r = np.clip(np.nan_to_num(rho), 0.0, 1.0)
    cov = float(np.sum(3.263 * r + 0.710 * r**2 + 0.027 * r**3))
    variance = 4.0 * m + 2.0 * cov
    scale, dof = variance / (4.0 * m), 8.0 * m * m / variance
    return float(chi2.sf(_fisher_statistic(ps) / scale, dof))


def stouffer(ps: Sequence[float], rho: np.ndarray) -> float:
    z = sum(float(norm.isf(min(max(p, TINY), 1 - 1e-16))) for p in ps) / math.sqrt(len(ps))
    return float(norm.sf(z))


def cauchy(ps: Sequence[float], rho: np.ndarray) -> float:
    t = sum(math.tan((0.5 - min(p, 1 - 1e-16)) * math.pi) for p in ps) / len(ps)
    return 0.5 - math.atan(t) / math.pi


RULES: dict[str, Callable[[Sequence[float], np.ndarray], float]] = {
    "Bonferroni min-p (the library's)": bonferroni,
    "Simes": simes,
    "geometric mean × e (Vovk–Wang)": geometric,
    "arithmetic mean × 2 (Vovk–Wang)": arithmetic,
    "Fisher": fisher,
    "Fisher, Brown's correction": brown,
    "Stouffer": stouffer,
    "Cauchy combination": cauchy,
}


def class_evidence(npz: Any, verdicts: dict[str, list[ClassVerdict]], members: Sequence[str]):
    """Per class of one run: (label, poisoned?, member p-values, named by a member?, the namers'
    own p-values, the pairwise Spearman ρ of the members' verdict scores within the class)."""
    labels, truth = npz["labels"], npz["truth"]
    rows = []
    for c in sorted({v.label for name in members for v in verdicts[name]}):
        votes = [next(v for v in verdicts[name] if v.label == c) for name in members]
        inside = labels == c
        columns = []
        for name in members:
            key = f"{name}/verdict_scores"
            columns.append(npz[key if key in npz else f"{name}/scores"][inside])
        corr = np.atleast_2d(spearmanr(np.column_stack(columns)).statistic)
        rows.append((
            c, bool(truth[inside].any()), [effective_p(v) for v in votes],
            [effective_p(v) for v in votes if v.poisoned], corr[np.triu_indices(len(members), 1)],
        ))  # fmt: skip
    return rows


def compare(runs: list[tuple[str, Any, dict[str, list[ClassVerdict]]]], members: Sequence[str]):
    """Markdown table: per rule, clean and poisoned classes named over every saved run, and the
    (run, class) decisions that differ from Bonferroni's."""
    evidence = [(name, class_evidence(npz, verdicts, members)) for name, npz, verdicts in runs]
    table = [
        "| combination | clean classes named | poisoned classes named | differs from Bonferroni on |",
        "|---|---|---|---|",
    ]
    reference: dict[tuple[str, int], bool] = {}
    for rule_name, rule in RULES.items():
        clean = [0, 0]
        poisoned = [0, 0]
        changed = []
        for run_name, rows in evidence:
            merged = [rule(ps, rho) for _, _, ps, _, rho in rows]
            levels, passed = holm(merged, ALPHA)
            for (c, is_poisoned, ps, namers, _), level, ok in zip(
                rows, levels, passed, strict=True
            ):
                if rule is bonferroni:  # the namer's own M·p within the level, as in combine()
                    named = ok and any(len(ps) * p <= level for p in namers)
                else:
                    named = ok and bool(namers)
                tally = poisoned if is_poisoned else clean
                tally[0] += named
                tally[1] += 1
                key = (run_name, c)
                if rule is bonferroni:
                    reference[key] = named
                elif reference[key] != named:
                    word = "named" if named else "missed"
                    kind = "poisoned" if is_poisoned else "clean"
                    changed.append(f"{run_name} class {c} ({kind}) {word}")
        listed = "; ".join(changed[:6]) + (
            f"; … {len(changed) - 6} more" if len(changed) > 6 else ""
        )
        table.append(
            f"| {rule_name} | {clean[0]} / {clean[1]} | {poisoned[0]} / {poisoned[1]} | "
            f"{listed or '—'} |"
        )
    return "\n".join(table)


def dependence_simulation(draws: int = 1_000_000, members: int = 3, level: float = 0.005) -> str:
    """Markdown table: how often a rule rejects one clean class at ``level`` (α / K for K = 10)
    when the members' p-values are uniform and pairwise dependent (a Gaussian copula with
    correlation ρ), as a multiple of ``level``; "gated" also requires one p-value within
    ``level`` (a member naming the class on its own at Holm's first step)."""
    rng = np.random.default_rng(0)
    lines = [
        "| ρ | Bonferroni | Fisher | Fisher, gated |",
        "|---|---|---|---|",
    ]
    for rho in (0.0, 0.3, 0.5, 0.7, 0.9):
        cov = np.full((members, members), rho)
        np.fill_diagonal(cov, 1.0)
        z = rng.standard_normal((draws, members)) @ np.linalg.cholesky(cov).T
        p = norm.sf(z)
        fisher_p = chi2.sf(-2.0 * np.log(p).sum(axis=1), 2 * members)
        gate = (p <= level).any(axis=1)
        rates = (
            (members * p.min(axis=1) <= level).mean(),
            (fisher_p <= level).mean(),
            (gate & (fisher_p <= level)).mean(),
        )
        lines.append(f"| {rho:g} | " + " | ".join(f"{r / level:.2f}×" for r in rates) + " |")
    return "\n".join(lines)
