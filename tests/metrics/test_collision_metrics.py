"""Feature-collision metrics against hand computations and textbook interval values."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.metrics.collision import (
    clopper_pearson_interval,
    distance_ratio,
    perturbation,
    success_rate,
    wilson_interval,
)

Z95 = 1.959963984540054


def _wilson_by_hand(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(45, 50), (3, 17), (50, 50), (0, 10)])
def test_wilson_matches_the_textbook_formula(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    want_low, want_high = _wilson_by_hand(k, n)
    assert low == pytest.approx(max(0.0, want_low), abs=1e-12)
    assert high == pytest.approx(min(1.0, want_high), abs=1e-12)


def test_known_interval_values() -> None:
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10)[1] == pytest.approx(Z95**2 / (10 + Z95**2))  # 0.2775
    assert clopper_pearson_interval(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_success_rate_from_flags() -> None:
    flags = torch.tensor([True] * 46 + [False] * 4)
    rate = success_rate(flags)
    assert (rate.successes, rate.n, rate.rate) == (46, 50, 0.92)
    assert (rate.low, rate.high) == pytest.approx(_wilson_by_hand(46, 50))
    exact = success_rate(flags, method="clopper-pearson", confidence=0.9)
    assert exact.low < 0.92 < exact.high and exact.method == "clopper-pearson"
    assert (exact.low, exact.high) == clopper_pearson_interval(46, 50, 0.9)
    wide = clopper_pearson_interval(46, 50, 0.95)  # 90% coverage: strictly inside the 95% one
    assert wide[0] < exact.low and exact.high < wide[1] and exact.confidence == 0.9
    assert "92.0% (46/50; 95% wilson CI" in str(rate)
    assert rate.to_dict()["successes"] == 46
    with pytest.raises(ConfigError, match="interval method"):
        success_rate(flags, method="bootstrap")
    with pytest.raises(ConfigError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)
    with pytest.raises(ConfigError, match="successes"):
        wilson_interval(3, 2)


def test_distance_ratio_by_hand() -> None:
    target = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]])
    poison = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    base = torch.tensor([[6.0, 8.0], [0.0, 4.0], [1.0, 1.0]])
    ratio = distance_ratio(poison, target, base)
    assert ratio.dtype == torch.float64
    assert ratio[:2].tolist() == [1.0, 0.25]  # 5/5 and 1/4
    assert math.isnan(ratio[2])  # the base already sat on the target
    with pytest.raises(ConfigError, match="one shape"):
        distance_ratio(poison, target, base[:2])


def test_perturbation_norms_in_both_units() -> None:
    bases = torch.zeros(2, 1, 2, 2)
    poisons = bases.clone()
    poisons[0, 0, 0, 0], poisons[0, 0, 1, 1] = 0.3, 0.4
    poisons[1, 0, 0, 1] = -0.2
    size = perturbation(poisons, bases)
    assert size.l2.tolist() == pytest.approx([0.5, 0.2])
    assert size.linf.tolist() == pytest.approx([0.4, 0.2])
    assert size.l2_255.tolist() == pytest.approx([127.5, 51.0])
    assert size.summary()["l2_mean"] == pytest.approx(0.35)
    assert size.summary()["linf_mean_255"] == pytest.approx(0.3 * 255)
    with pytest.raises(ConfigError, match="differ"):
        perturbation(poisons, bases[:1])
