"""Where a named class is cut: the group above the break the tests judge, and the trailing
members below it that the class then loses too (poisonlab.defenses.verdicts, "The cut")."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence
from poisonlab.defenses.verdicts import (
    TRAIL_GAP,
    TRAIL_SHARE,
    VALLEY_WINDOWS,
    WINDOWS,
    BreakTest,
    ClassVerdict,
    class_verdicts,
    position_p_values,
    take_trailing,
)
from poisonlab.validation import ParameterError
from tests.defenses.conftest import Planted


def test_a_wide_gap_across_several_spacings_is_found_and_its_trailing_members_counted() -> None:
    """A group whose lowest members trail into the gap: no single spacing stands out, the window
    of eight does. The group above the break ends at the window's largest spacing (60, what the
    tests judge), and the four trailing members down to its deepest gap are counted apart;
    with ``trail_gap=None`` (the valley test's setting) there are none."""
    generator = torch.Generator().manual_seed(4)
    clean = torch.randn(600, generator=generator, dtype=torch.float64)
    group = 5.0 + torch.linspace(0.0, 1.5, 60, dtype=torch.float64)
    trail = torch.tensor([4.4, 4.0, 3.7, 3.4], dtype=torch.float64)  # the clean top is 2.9
    scores = torch.cat([clean, group, trail])
    verdict = BreakTest().verdict(3, scores, tested=10)
    assert verdict.poisoned and verdict.p_value < 1e-4
    assert verdict.suspects == 60 and verdict.cutoff == 5.0 and verdict.trailing == 4
    largest = BreakTest(trail_gap=None).verdict(3, scores, tested=10)
    assert largest.p_value == verdict.p_value and largest.suspects == 60
    assert largest.trailing == 0


def test_a_named_class_loses_its_trailing_members_only_after_its_tests_kept_it() -> None:
    """take_trailing flags the trailing members of a class still named and lowers its cut-off to
    the last of them; a class its tests cleared (``poisoned`` False) gets nothing."""
    generator = torch.Generator().manual_seed(4)
    clean = torch.randn(600, generator=generator, dtype=torch.float64)
    group = 5.0 + torch.linspace(0.0, 1.5, 60, dtype=torch.float64)
    trail = torch.tensor([4.4, 4.0, 3.7, 3.4], dtype=torch.float64)
    one = torch.cat([clean, group, trail])
    scores = torch.cat([one, one])
    labels = torch.cat([torch.zeros(664, dtype=torch.long), torch.ones(664, dtype=torch.long)])
    verdicts, flags = class_verdicts(scores, labels)
    assert [v.suspects for v in verdicts] == [60, 60] and int(flags.sum()) == 120
    cleared = (verdicts[0], replace(verdicts[1], poisoned=False))
    flags[664:] = False
    kept, extended = take_trailing(cleared, flags, scores, labels)
    assert kept[0].suspects == 64 and kept[0].cutoff == 3.4 and kept[0].trailing == 4
    assert torch.equal(extended[:664], torch.cat([torch.zeros(600), torch.ones(64)]).bool())
    assert kept[1] == cleared[1] and not extended[664:].any()


def test_the_cut_stays_at_the_largest_spacing_when_no_other_spacing_is_a_gap() -> None:
    """A group with one clean gap under it and no trailing members: the deepest gap of the window
    is that gap, so there are none; the valley test never counts any."""
    generator = torch.Generator().manual_seed(6)
    clean = torch.randn(400, generator=generator, dtype=torch.float64)
    group = 6.0 + 0.3 * torch.randn(30, generator=generator, dtype=torch.float64)
    scores = torch.cat([clean, group])
    verdict = BreakTest().verdict(0, scores, tested=10)
    assert verdict.suspects == 30 and verdict.trailing == 0
    assert BreakTest(trail_gap=None).verdict(0, scores, tested=10).suspects == 30
    assert BreakTest.valley().trail_gap is None


def cuts_window_by_window(
    spacings: list[float],
    k_min: int,
    k_max: int,
    k_end: int,
    widths: tuple[int, ...],
    trail_gap: float | None,
) -> list[int]:
    """The cut k̂ of every window, as the module docstring states it, one window at a time: the
    first position of the window's largest spacing at most k_max, or with ``trail_gap`` the last
    position at most k_max whose spacing is at least ``trail_gap`` times the mean of the
    spacings below the window and TRAIL_SHARE of that largest, when there is one and the
    window has a scale."""
    cuts = []
    for w in widths:
        for k in range(k_min, k_max + 1):
            if k + w - 1 > k_end or k + w > len(spacings):  # a window needs one spacing below
                continue
            below = spacings[k + w - 1 : k + w - 1 + min(max(k, 10), 40)]
            inside = {j: spacings[j - 1] for j in range(k, min(k + w - 1, k_max) + 1)}
            largest = max(inside.values())
            cut = min(j for j, d in inside.items() if d == largest)
            if trail_gap is not None and sum(below) > 0:
                floor = max(trail_gap * sum(below) / len(below), TRAIL_SHARE * largest)
                cut = max((j for j, d in inside.items() if d >= floor), default=cut)
            cuts.append(cut)
    return cuts


@pytest.mark.parametrize("trail_gap", [None, 1.0, 3.0, TRAIL_GAP])
def test_the_cut_of_every_window_is_the_window_by_window_one(trail_gap: float | None) -> None:
    """position_p_values' cuts equal a loop over the windows on random spacings: exponential,
    rounded to integers (ties and zeros), with a few spacings 30 times larger, and mostly zero;
    widths of 1 and up to 64, windows running past k_max (k_end > k_max) and to the end."""
    generator = torch.Generator().manual_seed(13)
    all_widths = [WINDOWS, (1,), (3, 5), VALLEY_WINDOWS]
    for trial in range(80):
        n = int(torch.randint(6, 90, (1,), generator=generator))
        d = torch.empty(n, dtype=torch.float64).exponential_(generator=generator)
        if trial % 4 == 1:
            d = (2 * d).round()
        elif trial % 4 == 2:
            d[torch.randint(0, n, (3,), generator=generator)] *= 30
        elif trial % 4 == 3:
            d = 10.0 * (d > 2.5).double()
        k_min = int(torch.randint(1, 5, (1,), generator=generator))
        k_max = int(torch.randint(k_min, n + 1, (1,), generator=generator))
        k_end = int(torch.randint(k_max, n + 3, (1,), generator=generator))
        widths = all_widths[trial % len(all_widths)]
        _, _, cut = position_p_values(d, k_min, k_max, k_end, widths, trail_gap=trail_gap)
        expected = cuts_window_by_window(d.tolist(), k_min, k_max, k_end, widths, trail_gap)
        assert cut.tolist() == expected, (trial, n, k_min, k_max, k_end, widths)


def test_trail_gap_below_one_is_refused() -> None:
    """A factor below 1 would call ordinary spacings gaps; the error names the parameter."""
    with pytest.raises(ParameterError, match="trail_gap"):
        BreakTest(trail_gap=0.5)


def test_fit_confirms_the_group_above_the_break_and_then_adds_its_trailing_members() -> None:
    """The confirmation (and so the retraining it runs) sees the 60 samples above the break;
    the class it keeps named then loses its 4 trailing members too, and the result's verdict
    says how many of its suspects they are."""
    generator = torch.Generator().manual_seed(4)
    clean = torch.randn(600, generator=generator, dtype=torch.float64)
    group = 5.0 + torch.linspace(0.0, 1.5, 60, dtype=torch.float64)
    trail = torch.tensor([4.4, 4.0, 3.7, 3.4], dtype=torch.float64)
    scores = torch.cat([clean, group, trail])
    labels = torch.zeros(len(scores), dtype=torch.long)
    evidence = Evidence(ImageDataset(torch.zeros(len(labels), 1, 2, 2), labels, 1))
    seen: list[int] = []

    class Records(Planted):
        def _confirm(
            self, evidence: Evidence, verdicts: tuple[ClassVerdict, ...], flags: torch.Tensor
        ) -> tuple[tuple[ClassVerdict, ...], torch.Tensor]:
            seen.append(int(flags.sum()))
            return verdicts, flags

    result = Records(scores).fit(evidence).result
    assert seen == [60]
    (verdict,) = result.verdicts
    assert verdict.suspects == 64 and verdict.trailing == 4 and verdict.cutoff == 3.4
    assert torch.equal(result.flagged, scores >= 3.4)
