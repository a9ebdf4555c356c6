"""The demo's headline figure: the numbers behind each claim verdict, drawn from the stored metrics.

Three panels, each with the criterion the verdict uses as a dashed line
(:mod:`poisonlab.workflows.demo_summary`): feature-collision success against the CE and the LGM
victim, without and with the LGM likelihood filter (mean ‖p − b‖₂ under each victim); what the
filter removed from each victim's fine-tuning set (poisons and clean images, in percent); the
BadNets ASR beside each backdoor defense's AUROC. A missing metric leaves its bar out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from poisonlab.reports.plots import CLEAN, POISON, _figure, _png
from poisonlab.workflows.demo_summary import (
    MIN_ASR,
    MIN_AUROC,
    MIN_COLLISION_SUCCESS,
    MIN_POISONS_REMOVED,
    defense_names,
)

Metrics = Mapping[str, float | int]
FILTER = "lgm-likelihood"


def _value(metrics: Metrics, name: str) -> float:
    """``metrics[name]`` as a float, NaN when missing (matplotlib leaves NaN bars out)."""
    value = metrics.get(name)
    return math.nan if value is None else float(value)


def _ratio(part: float, whole: float) -> float:
    """100·part/whole, NaN when either is missing or ``whole`` is 0."""
    return 100 * part / whole if np.isfinite(part) and np.isfinite(whole) and whole else math.nan


def _label_bars(axes: Any, bars: Any) -> None:
    """Each finite bar's height above it, rounded to a whole percent."""
    for bar in bars:
        height = bar.get_height()
        if np.isfinite(height):
            axes.annotate(
                f"{height:.0f}",
                (bar.get_x() + bar.get_width() / 2, height),
                ha="center",
                va="bottom",
                fontsize=7,
            )


def demo_summary_png(
    backdoor: Metrics, collision: Metrics, heatmap_class: int | None = None
) -> bytes:
    """PNG of the three panels (module docstring) from the two demo cells' flat metrics."""
    figure = _figure(12.5, 3.6)
    left, middle, right = figure.subplots(1, 3, width_ratios=(1.0, 0.8, 1.7))

    victims = ("ce", "lgm")
    x = np.arange(len(victims))
    before = [100 * _value(collision, f"collision.{v}.success_rate") for v in victims]
    prefixes = {"ce": f"defense.{FILTER}.ce.", "lgm": f"defense.{FILTER}."}
    after = [100 * _value(collision, prefixes[v] + "success_with_filter") for v in victims]
    sizes = [_value(collision, f"collision.{v}.l2_mean") for v in victims]
    _label_bars(left, left.bar(x - 0.2, before, 0.4, color=POISON, label="no filter"))
    _label_bars(left, left.bar(x + 0.2, after, 0.4, color=CLEAN, label="LGM filter"))
    left.axhline(100 * MIN_COLLISION_SUCCESS, color="#555", linestyle="--", linewidth=0.8)
    left.set_xticks(
        x, [f"{v.upper()} victim\n‖p−b‖₂ = {s:.2f}" for v, s in zip(victims, sizes, strict=True)]
    )
    left.set_ylim(0, 105)
    left.set_ylabel("targets misclassified (%)")
    left.set_title("Feature collision: success", fontsize=10)
    left.legend(fontsize=7, loc="upper right")

    removed_poison, removed_clean = [], []
    for v in victims:
        p = prefixes[v]
        poisons, analysed = _value(collision, p + "n_poison"), _value(collision, p + "n_analysed")
        removed_poison.append(_ratio(_value(collision, p + "n_poison_removed"), poisons))
        removed_clean.append(_ratio(_value(collision, p + "n_clean_removed"), analysed - poisons))
    _label_bars(middle, middle.bar(x - 0.2, removed_poison, 0.4, color=POISON, label="poisons"))
    _label_bars(middle, middle.bar(x + 0.2, removed_clean, 0.4, color=CLEAN, label="clean"))
    middle.axhline(100 * MIN_POISONS_REMOVED, color="#555", linestyle="--", linewidth=0.8)
    middle.set_xticks(x, [f"{v.upper()} victim's set" for v in victims])
    middle.set_ylim(0, 105)
    middle.set_ylabel("removed by the filter (%)")
    middle.set_title("LGM likelihood filter", fontsize=10)
    middle.legend(fontsize=7, loc="center right")

    names = defense_names(backdoor)
    values = [100 * _value(backdoor, "attack.asr")]
    values += [100 * _value(backdoor, f"defense.{n}.auroc") for n in names]
    colours = [POISON] + [CLEAN] * len(names)
    positions = np.arange(len(values))
    _label_bars(right, right.bar(positions, values, 0.7, color=colours))
    right.plot([-0.4, 0.4], [100 * MIN_ASR] * 2, color="#555", linestyle="--", linewidth=0.8)
    if names:
        right.plot(
            [0.6, len(values) - 0.6], [100 * MIN_AUROC] * 2, "--", color="#555", linewidth=0.8
        )
    ticks = [n.replace("-", "-\n", 1) for n in names]
    if heatmap_class is not None and "heatmap-clustering" in names:
        ticks[names.index("heatmap-clustering")] += f"\n(class {heatmap_class})"
    right.set_xticks(positions, ["BadNets\nASR", *ticks])
    right.tick_params(axis="x", labelsize=7)
    right.set_ylim(0, 105)
    right.set_ylabel("percent")
    right.set_title("BadNets: attack success, then each defense's AUROC", fontsize=10)
    return _png(figure)
