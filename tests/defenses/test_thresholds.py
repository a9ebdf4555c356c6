"""Thresholds are checked when built: ranges in the message, no NaN, held-out needs declared."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.defenses import (
    Contamination,
    FixedValue,
    PaperRule,
    ScoreSet,
    TargetFPR,
    build_detector,
    parse_threshold,
)
from poisonlab.errors import ConfigError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("paper", PaperRule),
        ("contamination:0.1", Contamination(0.1)),
        (" fpr: 0.05 ", TargetFPR(0.05)),
        ("value:-3.5", FixedValue(-3.5)),
        ("value:1e3", FixedValue(1000.0)),
    ],
)
def test_parse_accepts_the_documented_forms(spec: str, expected) -> None:
    parsed = parse_threshold(spec)
    if isinstance(expected, type):
        assert isinstance(parsed, expected)
    else:
        assert parsed == expected


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("contamination:1.5", ["'contamination:1.5'", "a number in (0, 1)", "got 1.5"]),
        ("contamination:0", ["a number in (0, 1)", "got 0"]),
        ("fpr:1", ["'fpr:1'", "fpr must be a number in (0, 1)"]),
        ("fpr:-0.1", ["a number in (0, 1)"]),
        ("value:nan", ["'value:nan'", "a finite number", "got nan"]),
        ("value:inf", ["a finite number"]),
        ("value:-1e400", ["a finite number"]),
        ("contamination:0.1x", ["'0.1x' is not a number", "contamination:F with F in (0, 1)"]),
        ("fpr:", ["not understood", "value:V with V a finite number"]),
        ("top:3", ["not understood", "paper, contamination:F"]),
        ("paper:1", ["not understood"]),
        ("contamnation:0.1", ["not understood (did you mean contamination:0.1?); use verdict"]),
        ("verdit", ["'verdit' not understood (did you mean verdict?)"]),
        ("Paper", ["(did you mean paper?)"]),
    ],
)
def test_bad_thresholds_say_the_valid_range(spec: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_threshold(spec)
    message = str(info.value)
    assert "\n" not in message
    assert ("did you mean" in message) == any("did you mean" in f for f in fragments)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_threshold_objects_validate_too() -> None:
    for bad in (math.nan, True, "0.1", 1.0):
        with pytest.raises(ConfigError, match="fraction must be a number in"):
            Contamination(bad)
    with pytest.raises(ConfigError, match="per_class must be true or false"):
        Contamination(0.1, per_class=1)
    with pytest.raises(ConfigError, match="value must be a finite number, got nan"):
        FixedValue(math.nan)
    assert FixedValue(3).value == 3.0 and isinstance(FixedValue(3).value, float)


def test_only_target_fpr_needs_clean_reference_scores() -> None:
    assert TargetFPR(0.1).needs_reference
    for other in (PaperRule(), Contamination(0.1), FixedValue(0.0)):
        assert not other.needs_reference


def test_a_nan_threshold_can_no_longer_silently_flag_nothing() -> None:
    """``value:nan`` used to be accepted and flag no sample; now it cannot be built."""
    scores = ScoreSet(torch.arange(4.0, dtype=torch.float64), torch.zeros(4, dtype=torch.bool))
    flags, _ = FixedValue(1.5).flag(scores, torch.zeros(4, dtype=torch.long))
    assert flags.tolist() == [False, False, True, True]
    with pytest.raises(ConfigError):
        build_detector("spectral-signatures", threshold="value:nan")


def test_a_detector_names_itself_in_a_threshold_error() -> None:
    with pytest.raises(
        ConfigError, match=r"^bnn threshold 'fpr:2': fpr must be a number in \(0, 1\)"
    ):
        build_detector("bnn", threshold="fpr:2")


def test_per_class_cutoff_is_on_the_ranking_the_verdict_cut() -> None:
    """Activation Clustering's verdicts cut its Fisher projections, not its separation scores:
    the reported cut-off is the lowest flagged projection, and no kept sample reaches it (on
    the separation scores, 41 kept samples of class 2 scored above the old cut-off)."""
    from tests.defenses.conftest import make_case

    case = make_case(n_per_class=200, poison_fraction=0.1, shift=6.0, seed=1)
    result = build_detector("activation-clustering", confirm=None).fit(case.evidence).result
    assert result.threshold["cutoff_scores"] == "verdict_scores"
    assert result.verdict_scores is not None
    named = [c for c, v in result.threshold["per_class"].items() if v["flagged"]]
    assert named
    for c in named:
        members = case.labels == int(c)
        cutoff = result.threshold["per_class"][c]["cutoff"]
        flagged = result.verdict_scores[members & result.flagged]
        kept = result.verdict_scores[members & ~result.flagged]
        assert cutoff == pytest.approx(float(flagged.min()))
        assert bool((kept < cutoff).all())


def test_per_class_cutoff_is_none_when_the_flags_are_not_a_cut() -> None:
    from poisonlab.defenses.base import class_cutoffs

    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 9.0, 1.0], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    flags = torch.tensor([True, False, True, False, True, False])  # 4.0 kept above 3.0
    out = class_cutoffs(scores, flags, labels, torch.ones(6, dtype=torch.bool))
    assert out["0"] == {"analysed": 4, "flagged": 2, "cutoff": None}
    assert out["1"] == {"analysed": 2, "flagged": 1, "cutoff": 9.0}
