"""Feature-collision metrics: success rate with a confidence interval, distance ratio, perturbation.

Success rate: the fraction of targets predicted as their base class after the victim retrains,
with a two-sided binomial confidence interval — Wilson's score interval by default (closed form,
good coverage for small n and rates near 0 or 1; Wilson 1927), or the exact Clopper–Pearson
interval (Clopper & Pearson 1934; conservative, from Beta quantiles).

Distance ratio ||f(p) − f(t)|| / ||f(b) − f(t)|| per poison: 1 means the poison did not move in
feature space, 0 a perfect collision (Shafahi et al. 2018). Perturbation ||p − b||₂ per poison on
the [0, 1] pixel scale, and ×255 for comparison with papers working on [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from scipy.stats import beta as beta_distribution
from scipy.stats import norm
from torch import Tensor

from poisonlab.errors import ConfigError

INTERVALS = ("wilson", "clopper-pearson")


@dataclass(frozen=True)
class RateInterval:
    """A success rate k/n with its two-sided confidence interval [low, high]."""

    successes: int
    n: int
    rate: float
    low: float
    high: float
    confidence: float
    method: str

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        pct = 100 * self.confidence
        return (
            f"{100 * self.rate:.1f}% ({self.successes}/{self.n}; {pct:g}% {self.method} CI "
            f"{100 * self.low:.1f}–{100 * self.high:.1f}%)"
        )


def _check(successes: int, n: int, confidence: float) -> None:
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ConfigError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence!r}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when n = 0.

    centre = (k + z²/2) / (n + z²), half-width = z·sqrt(k(n−k)/n + z²/4) / (n + z²),
    with z the two-sided standard-normal quantile of ``confidence``.
    """
    _check(successes, n, confidence)
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + confidence / 2.0))
    z2 = z * z
    centre = (successes + z2 / 2.0) / (n + z2)
    half = z * math.sqrt(successes * (n - successes) / n + z2 / 4.0) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson_interval(
    successes: int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Exact Clopper–Pearson interval: Beta(k, n−k+1) and Beta(k+1, n−k) quantiles; (0, 1) if n = 0."""
    _check(successes, n, confidence)
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else beta_distribution.ppf(alpha / 2, successes, n - successes + 1)
    high = (
        1.0
        if successes == n
        else beta_distribution.ppf(1 - alpha / 2, successes + 1, n - successes)
    )
    return float(low), float(high)


def success_rate(
    success: Tensor, *, confidence: float = 0.95, method: str = "wilson"
) -> RateInterval:
    """Success rate of a bool vector (one entry per target) with its confidence interval.

    Parameters
    ----------
    success : Tensor (T,), bool
        True where the target was predicted as its base class.
    confidence : float
        Two-sided coverage of the interval, e.g. 0.95.
    method : {"wilson", "clopper-pearson"}
    """
    if method not in INTERVALS:
        raise ConfigError(f"interval method {method!r} is not one of {', '.join(INTERVALS)}")
    flags = torch.as_tensor(success).reshape(-1).bool()
    k, n = int(flags.sum()), int(flags.numel())
    interval = wilson_interval if method == "wilson" else clopper_pearson_interval
    low, high = interval(k, n, confidence)
    return RateInterval(k, n, k / n if n else float("nan"), low, high, confidence, method)


def distance_ratio(
    poison_features: Tensor, target_features: Tensor, base_features: Tensor
) -> Tensor:
    """||f(p) − f(t)|| / ||f(b) − f(t)|| per row of (P, D) feature matrices, float64 (P,).

    A base that already coincides with its target (denominator 0) gives NaN.
    """
    if not poison_features.shape == target_features.shape == base_features.shape:
        raise ConfigError("poison, target and base features must have one shape (P, D)")
    p, t, b = (x.double().flatten(1) for x in (poison_features, target_features, base_features))
    after = torch.linalg.vector_norm(p - t, dim=1)
    before = torch.linalg.vector_norm(b - t, dim=1)
    return torch.where(before > 0, after / before.clamp_min(1e-300), torch.nan)


@dataclass(frozen=True, eq=False)
class Perturbation:
    """Per-poison perturbation sizes; ``*_255`` are the same numbers on the [0, 255] scale."""

    l2: Tensor
    linf: Tensor

    @property
    def l2_255(self) -> Tensor:
        """||p − b||₂ in 0–255 pixel units."""
        return self.l2 * 255.0

    @property
    def linf_255(self) -> Tensor:
        """||p − b||∞ in 0–255 pixel units."""
        return self.linf * 255.0

    def summary(self) -> dict[str, float]:
        """Means and maxima in both units, JSON-ready."""
        if self.l2.numel() == 0:
            return {}
        return {
            "l2_mean": float(self.l2.mean()),
            "l2_max": float(self.l2.max()),
            "l2_mean_255": float(self.l2_255.mean()),
            "linf_mean": float(self.linf.mean()),
            "linf_mean_255": float(self.linf_255.mean()),
        }


def perturbation(poisons: Tensor, bases: Tensor) -> Perturbation:
    """L2 and L∞ norms of p − b per poison for (P, C, H, W) images on the [0, 1] scale (float64)."""
    if poisons.shape != bases.shape:
        raise ConfigError(f"poisons {tuple(poisons.shape)} and bases {tuple(bases.shape)} differ")
    diff = (poisons.double() - bases.double()).flatten(1)
    return Perturbation(
        l2=torch.linalg.vector_norm(diff, dim=1),
        linf=torch.linalg.vector_norm(diff, ord=float("inf"), dim=1),
    )
