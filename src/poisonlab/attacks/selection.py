"""Poison budgets and the choice of poisoned samples: no replacement, an explicit generator, never
shrunk.

Three budget kinds, named so the reader knows what the fraction is of:

- ``rate`` p: poisons form a fraction p of the training set the victim sees. Appended poisons:
  round(p·n_s/(1-p)) per source class s when every class is a source (Subedar et al. 2019,
  docs/methods.md#poison-budgets);
  in general each source class contributes its share n_s/N_src of p·N/(1-p). Poisons made in place:
  p·N in total, shared the same way.
- ``target_rate`` p: poisons form a fraction p of the attacker-label class t (n_t counted before the
  attack). Poisons that join class t (appended, or relabelled into it): round(p·n_t/(1-p)) (Schulth
  et al. 2022's standard attack); target-class images modified in place (clean-label): round(p·n_t)
  (Turner et al., Schulth et al. 2022's label-consistent attack). Shared over the sources of t by
  size.
- ``count`` c: exactly c poisons, shared over the source classes by size (largest remainder).

Rounding is Python's ``round`` (half to even, as ``np.round`` in Schulth et al. 2022's code). A
budget that needs more images than a class holds, or that rounds to no poison at all, raises
BudgetError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from poisonlab.errors import BudgetError, ConfigError
from poisonlab.ranges import counted
from poisonlab.validation import FRACTION, POSITIVE_INT, Options, check_param

BUDGET_KINDS = ("rate", "target_rate", "count")


@dataclass(frozen=True)
class Budget:
    """One poison budget: ``kind`` in {"rate", "target_rate", "count"} and its value."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        kind = check_param("budget", "kind", self.kind, [Options(BUDGET_KINDS)])
        allowed = POSITIVE_INT if kind == "count" else FRACTION
        object.__setattr__(self, "value", check_param("", kind, self.value, [allowed]))

    @classmethod
    def from_args(
        cls,
        *,
        rate: float | None = None,
        target_rate: float | None = None,
        count: int | None = None,
        default: Budget,
    ) -> Budget:
        """The one budget given, or ``default`` when none is; two or more raise ConfigError."""
        given = {
            k: v
            for k, v in (("rate", rate), ("target_rate", target_rate), ("count", count))
            if v is not None
        }
        if len(given) > 1:
            listed = ", ".join(f"{k}={v}" for k, v in given.items())
            raise ConfigError(f"give only one of rate, target_rate, count (got {listed})")
        if not given:
            return default
        ((kind, value),) = given.items()
        return cls(kind, value)

    def to_params(self) -> dict[str, float | int | None]:
        """``{"rate": ..., "target_rate": ..., "count": ...}`` with the unused kinds None."""
        return {k: (self.value if k == self.kind else None) for k in BUDGET_KINDS}

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` so the parts sum exactly to it."""
    mass = float(sum(weights))
    if mass <= 0:
        return [0] * len(weights)
    exact = [total * w / mass for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def poison_quotas(
    budget: Budget,
    class_counts: Sequence[int],
    attacker_label: Mapping[int, int],
    *,
    appended: bool,
) -> dict[int, int]:
    """How many poisons to draw from each source class.

    Parameters
    ----------
    budget : Budget
    class_counts : sequence of int, length K
        Training images per class.
    attacker_label : mapping source class → label the poisons from it will carry
        (equal to the source for clean-label attacks).
    appended : bool
        True when poisons are added as new rows, False when they replace the rows they came from.

    Returns
    -------
    dict source class → number of poisons (every source present, possibly 0).

    Raises
    ------
    BudgetError
        When the budget rounds to no poison (a class that cannot supply its quota is checked
        by :func:`choose_indices`).
    """
    sources = sorted(attacker_label)
    n_total = int(sum(class_counts))
    n_src = {s: int(class_counts[s]) for s in sources}
    p = float(budget.value)
    if budget.kind == "count":
        parts = largest_remainder(int(budget.value), [n_src[s] for s in sources])
        quotas = dict(zip(sources, parts, strict=True))
    elif budget.kind == "rate":
        pooled = sum(n_src.values())
        scale = n_total / pooled if pooled else 0.0
        factor = p / (1.0 - p) if appended else p
        quotas = {s: round(factor * n_src[s] * scale) for s in sources}
    else:
        quotas = {}
        for s in sources:
            t = attacker_label[s]
            feeding = sum(n_src[u] for u in sources if attacker_label[u] == t)
            grows = appended or s != t
            factor = p / (1.0 - p) if grows else p
            share = n_src[s] / feeding if feeding else 0.0
            quotas[s] = round(factor * int(class_counts[t]) * share)
    if sum(quotas.values()) == 0:
        raise BudgetError(
            f"budget {budget} gives 0 poisons for {n_total} training images "
            f"(source classes {sources}); raise it or give a count"
        )
    return quotas


def choose_indices(
    labels: Tensor, quotas: Mapping[int, int], *, generator: torch.Generator, budget: object = ""
) -> Tensor:
    """Indices of ``quotas[s]`` distinct samples of each class s, chosen uniformly with
    ``generator``.

    Parameters
    ----------
    labels : Tensor of shape (N,), int64
    quotas : mapping class → count
    generator : torch.Generator
    budget : object
        Shown in error messages (e.g. the Budget).

    Returns
    -------
    Tensor of shape (sum of quotas,), int64: classes in increasing order, ascending indices
    within each class.

    Raises
    ------
    BudgetError
        When a class holds fewer samples than its quota (the budget is never shrunk).
    """
    chosen = []
    for s in sorted(quotas):
        wanted = int(quotas[s])
        if wanted < 0:
            raise ConfigError(f"quota of class {s} is negative ({wanted})")
        members = (labels == s).nonzero().flatten()
        if wanted > len(members):
            what = f"budget {budget} " if budget != "" else ""
            raise BudgetError(
                f"{what}needs {counted(wanted, 'image')} of class {s} but the training set has only "
                f"{len(members)} (budgets are never shrunk: lower it or choose other classes)"
            )
        order = torch.randperm(len(members), generator=generator)[:wanted]
        chosen.append(torch.sort(members[order]).values)
    if not chosen:
        return torch.empty(0, dtype=torch.long)
    return torch.cat(chosen)
