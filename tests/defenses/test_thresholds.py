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
