"""Budgets resolve to the documented counts; selection is without replacement and never shrunk."""

from __future__ import annotations

import pytest
import torch

from poisonlab.attacks.selection import Budget, choose_indices, largest_remainder, poison_quotas
from poisonlab.errors import BudgetError, ConfigError
from poisonlab.seeding import make_generator

COUNTS = [100, 80, 60, 120]
LABELS = torch.cat([torch.full((n,), k) for k, n in enumerate(COUNTS)])
ALL_TO_ALL = {s: (s + 1) % 4 for s in range(4)}


def test_rate_all_to_all_is_the_seed_002_formula_per_class() -> None:
    quotas = poison_quotas(Budget("rate", 0.1), COUNTS, ALL_TO_ALL, appended=True)
    assert quotas == {s: round(0.1 * n / 0.9) for s, n in enumerate(COUNTS)}
    # the appended poisons form (about) a fraction p of the poisoned set
    total = sum(quotas.values())
    assert abs(total / (sum(COUNTS) + total) - 0.1) < 0.005


def test_rate_in_place_is_a_fraction_of_the_set() -> None:
    quotas = poison_quotas(Budget("rate", 0.25), COUNTS, ALL_TO_ALL, appended=False)
    assert quotas == {s: round(0.25 * n) for s, n in enumerate(COUNTS)}


def test_rate_one_to_one_takes_the_whole_budget_from_the_source() -> None:
    quotas = poison_quotas(Budget("rate", 0.1), COUNTS, {2: 3}, appended=True)
    assert quotas == {2: round(0.1 * sum(COUNTS) / 0.9)}


def test_target_rate_is_the_seed_004_formula() -> None:
    # standard attack: poisons join the target class -> round(p·n_t/(1-p))
    assert poison_quotas(Budget("target_rate", 0.33), COUNTS, {2: 3}, appended=True) == {
        2: round(0.33 * 120 / 0.67)
    }
    # clean-label in place: round(p·n_t) images of the target itself
    assert poison_quotas(Budget("target_rate", 0.33), COUNTS, {3: 3}, appended=False) == {
        3: round(0.33 * 120)
    }


def test_target_rate_all_to_one_is_shared_by_source_size() -> None:
    sources = {0: 3, 1: 3, 2: 3}
    quotas = poison_quotas(Budget("target_rate", 0.2), COUNTS, sources, appended=True)
    wanted = 0.2 * 120 / 0.8
    assert quotas == {s: round(wanted * COUNTS[s] / 240) for s in sources}


def test_count_is_exact_and_shared_by_size() -> None:
    quotas = poison_quotas(Budget("count", 37), COUNTS, ALL_TO_ALL, appended=True)
    assert sum(quotas.values()) == 37
    assert quotas == dict(enumerate(largest_remainder(37, COUNTS)))
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(7, [0, 5]) == [0, 7]


def test_a_budget_that_rounds_to_nothing_is_an_error() -> None:
    with pytest.raises(BudgetError, match="gives 0 poisons"):
        poison_quotas(Budget("rate", 0.001), COUNTS, {1: 2}, appended=True)


@pytest.mark.parametrize("kind", ["rate", "target_rate", "count"])
def test_mask_counts_equal_the_budget(kind: str) -> None:
    value = {"rate": 0.1, "target_rate": 0.3, "count": 25}[kind]
    quotas = poison_quotas(Budget(kind, value), COUNTS, ALL_TO_ALL, appended=True)
    index = choose_indices(LABELS, quotas, generator=make_generator(0))
    assert len(index) == len(set(index.tolist())) == sum(quotas.values())
    for s, q in quotas.items():
        assert int((LABELS[index] == s).sum()) == q


def test_choice_is_without_replacement_deterministic_and_seed_dependent() -> None:
    quotas = {0: 100, 1: 40}
    a = choose_indices(LABELS, quotas, generator=make_generator(3))
    b = choose_indices(LABELS, quotas, generator=make_generator(3))
    c = choose_indices(LABELS, quotas, generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 140  # the whole of class 0: every image exactly once
    assert set(a[:100].tolist()) == set(range(100))


def test_an_impossible_budget_names_the_numbers() -> None:
    with pytest.raises(
        BudgetError, match="needs 61 images of class 2 but the training set has only 60"
    ):
        choose_indices(LABELS, {2: 61}, generator=make_generator(0))
    quotas = poison_quotas(Budget("rate", 0.5), COUNTS, {2: 0}, appended=True)
    with pytest.raises(BudgetError, match=r"budget rate=0.5 needs 360 images of class 2"):
        choose_indices(LABELS, quotas, generator=make_generator(0), budget=Budget("rate", 0.5))


def test_two_budgets_are_an_error_and_none_takes_the_default() -> None:
    default = Budget("rate", 0.1)
    with pytest.raises(
        ConfigError, match=r"only one of rate, target_rate, count \(got rate=0.1, count=5\)"
    ):
        Budget.from_args(rate=0.1, count=5, default=default)
    assert Budget.from_args(default=default) is default
    assert Budget.from_args(target_rate=0.2, default=default) == Budget("target_rate", 0.2)
    assert Budget("count", 5).to_params() == {"rate": None, "target_rate": None, "count": 5}


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("rate", 0.0, r"rate must be a number in \(0, 1\)"),
        ("rate", 1.0, r"rate must be a number in \(0, 1\)"),
        ("target_rate", -0.1, r"target_rate must be a number in \(0, 1\)"),
        ("count", 0, "count must be an integer >= 1"),
        ("count", 2.5, "count must be an integer >= 1"),
        ("fraction", 0.1, "budget kind"),
    ],
)
def test_out_of_range_budgets_name_the_parameter(kind: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Budget(kind, value)
