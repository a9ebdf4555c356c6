"""Per-class verdicts: the break test's calibration on clean classes, its power on a planted
group, and the verdicts of the detectors that give them (planted one-class backdoor, clean set)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import (
    Contamination,
    Evidence,
    VerdictRule,
    build_detector,
    parse_threshold,
)
from poisonlab.defenses.verdicts import (
    BreakTest,
    ClassVerdict,
    class_verdicts,
    holm,
    position_p_values,
)
from poisonlab.errors import ConfigError
from tests.defenses.conftest import Planted, fake_retraining, make_case

CLEAN_TAILS = {
    "exponential": lambda n, g: torch.empty(n, dtype=torch.float64).exponential_(generator=g),
    "gaussian": lambda n, g: torch.randn(n, generator=g, dtype=torch.float64),
    "chi2-1": lambda n, g: torch.randn(n, generator=g, dtype=torch.float64) ** 2,
    "uniform": lambda n, g: torch.rand(n, generator=g, dtype=torch.float64),
}


@pytest.mark.parametrize("valley", [False, True], ids=["default", "valley"])
@pytest.mark.parametrize("tail", list(CLEAN_TAILS))
def test_false_alarm_rate_on_many_clean_classes(tail: str, valley: bool) -> None:
    """300 clean classes of 150 samples: P(p ≤ a) stays within three binomial standard errors
    of a (a = 0.05 and 0.01) for exponential, Gaussian, χ²₁ and uniform score tails, with the
    default windows and with the valley test's."""
    generator = torch.Generator().manual_seed(0)
    test = BreakTest.valley() if valley else BreakTest()
    p = torch.tensor(
        [test.verdict(0, CLEAN_TAILS[tail](150, generator), 1).p_value for _ in range(300)]
    )
    for a in (0.05, 0.01):
        tolerance = 3 * (a * (1 - a) / len(p)) ** 0.5
        assert float((p <= a).double().mean()) <= a + tolerance, f"{tail} at {a}"


def test_spectral_signatures_verdicts_on_gaussian_classes_are_calibrated() -> None:
    """τ of clean Gaussian classes read through the detector's verdict scale (√τ): the rate of
    p ≤ a over 300 classes stays within three binomial standard errors of a."""
    from poisonlab.defenses.spectral_signatures import SpectralSignatures, spectral_scores

    generator = torch.Generator().manual_seed(6)
    test = BreakTest()
    p = []
    for _ in range(300):
        tau = spectral_scores(torch.randn(300, 16, generator=generator, dtype=torch.float64))[0]
        p.append(test.verdict(0, SpectralSignatures._verdict_scale(tau), 1).p_value)
    for a in (0.05, 0.01):
        tolerance = 3 * (a * (1 - a) / len(p)) ** 0.5
        assert float((torch.tensor(p) <= a).double().mean()) <= a + tolerance, a


def test_a_scale_changes_the_test_not_the_suspects_or_cutoffs() -> None:
    generator = torch.Generator().manual_seed(7)
    labels = torch.zeros(220, dtype=torch.long)
    scores = torch.randn(220, generator=generator, dtype=torch.float64).abs()
    scores[:20] += 8.0
    plain, flags = class_verdicts(scores, labels)
    scaled, scaled_flags = class_verdicts(scores, labels, scale=torch.sqrt)
    assert scaled[0].poisoned and torch.equal(flags, scaled_flags)
    assert scaled[0].cutoff == pytest.approx(float(scores[:20].min()))
    assert scaled[0].suspects == plain[0].suspects == 20


def test_a_separated_group_is_found_with_its_size() -> None:
    generator = torch.Generator().manual_seed(1)
    clean = torch.randn(180, generator=generator, dtype=torch.float64)
    group = 6.0 + 0.5 * torch.randn(20, generator=generator, dtype=torch.float64)
    verdict = BreakTest().verdict(8, torch.cat([clean, group]), tested=10)
    assert verdict.poisoned and verdict.label == 8
    assert verdict.suspects == 20 and verdict.cutoff == pytest.approx(float(group.min()))
    assert verdict.p_value <= verdict.level == pytest.approx(0.005)


def test_a_group_inside_the_clean_tail_is_not_named() -> None:
    generator = torch.Generator().manual_seed(2)
    clean = torch.randn(180, generator=generator, dtype=torch.float64)
    group = 1.5 + 0.5 * torch.randn(20, generator=generator, dtype=torch.float64)
    assert not BreakTest().verdict(8, torch.cat([clean, group]), tested=10).poisoned


def test_class_verdicts_flag_only_the_group_of_the_named_class() -> None:
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(5).repeat_interleave(120)
    scores = torch.randn(len(labels), generator=generator, dtype=torch.float64)
    planted = (labels == 2).nonzero().flatten()[:15]
    scores[planted] += 8.0
    scores[labels == 4] = float("nan")  # a class not analysed
    verdicts, flags = class_verdicts(scores, labels)
    assert [v.label for v in verdicts] == [0, 1, 2, 3]
    assert [v.label for v in verdicts if v.poisoned] == [2]
    expected = torch.zeros(len(labels), dtype=torch.bool)
    expected[planted] = True
    assert torch.equal(flags, expected)
    # Holm: the named class (smallest p) at 0.05 / 4, the others at 0.05 / 3, / 2, / 1
    assert verdicts[2].level == pytest.approx(0.05 / 4)
    assert sorted(v.level for v in verdicts) == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05])


def test_holm_steps_down_and_stops_at_the_first_failure() -> None:
    levels, rejected = holm([0.001, 0.02, 0.013, 0.5], 0.05)
    assert levels == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 / 3, 0.05])
    assert rejected == [True, True, True, False]  # Bonferroni (0.0125) would name only the first
    _, rejected = holm([0.03, 0.04, 0.001], 0.05)
    assert rejected == [False, False, True]  # 0.03 > 0.05 / 2 stops it; 0.04 is not reached
    assert holm([], 0.05) == ([], [])


def test_holm_keeps_the_family_wise_rate_on_clean_data() -> None:
    """4,000 clean data sets of 10 classes with uniform p-values: the rate of naming any class
    stays within three binomial standard errors of alpha, as Bonferroni's first step does."""
    generator = torch.Generator().manual_seed(7)
    p = torch.rand(4000, 10, generator=generator, dtype=torch.float64)
    any_named = [any(holm(row.tolist(), 0.05)[1]) for row in p]
    tolerance = 3 * (0.05 * 0.95 / len(p)) ** 0.5
    assert sum(any_named) / len(p) <= 0.05 + tolerance


def test_small_or_constant_classes_are_not_tested() -> None:
    test = BreakTest()
    tiny = test.verdict(0, torch.arange(10, dtype=torch.float64), 1)
    assert not tiny.poisoned and tiny.p_value == 1.0 and tiny.suspects == 0
    flat = test.verdict(0, torch.zeros(100, dtype=torch.float64), 1)
    assert not flat.poisoned and flat.statistic == 0.0


def test_window_p_values_are_exact_under_iid_exponential_spacings() -> None:
    """Every window's p-value is uniform when the spacings are i.i.d. Exp(1): its rate of
    p ≤ a over 4,000 simulated tails stays within three binomial standard errors of a."""
    generator = torch.Generator().manual_seed(5)
    spacings = torch.empty(4000, 80, dtype=torch.float64).exponential_(generator=generator)
    p = torch.stack([position_p_values(row, 3, 30)[0] for row in spacings])
    for a in (0.1, 0.01):
        rates = (p <= a).double().mean(dim=0)
        tolerance = 3 * (a * (1 - a) / len(spacings)) ** 0.5
        assert float((rates - a).abs().max()) <= tolerance + 0.004, a


def two_cluster_silhouettes(
    n: int, planted: int, distance: float, generator: torch.Generator
) -> torch.Tensor:
    """Silhouettes (b − a) / max(a, b) of a class split in two, as Heatmap Clustering scores it:
    a, b the distances to the centres of the planted group (the last ``planted`` of ``n`` 2-D
    Gaussian points, shifted by ``distance``) and of the rest; with ``planted = 0`` the split is
    2-means' cut of one elongated Gaussian at its middle, the smaller side taken as "planted"."""
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    if planted:
        x[n - planted :, 0] += distance
        group = torch.arange(n) >= n - planted
    else:
        x[:, 0] *= 2.0
        group = x[:, 0] > 0
        group = group if int(group.sum()) <= n // 2 else ~group
    a = (x - x[group].mean(0)).norm(dim=1)
    b = (x - x[~group].mean(0)).norm(dim=1)
    return (b - a) / torch.maximum(a, b)


def test_a_third_of_the_class_is_named_across_the_valley_of_its_silhouettes() -> None:
    """Regression (Schulth et al. 2022 Table 1 setting, 33% poisons): the silhouettes of a
    2-cluster split have a valley, not a gap, between the groups, and the valley under a group of
    a third of the class runs past ``max_fraction`` (35%). The valley test (windows of up to 64
    spacings that may end at 40% of the class) names every one of ten such classes at Holm's
    first step over ten classes (0.005); the default windows (at most 8, ending at 35%) missed
    several, as they judged Heatmap Clustering's 33% coats clean."""
    generator = torch.Generator().manual_seed(12)
    test = BreakTest.valley()
    for _ in range(10):
        scores = two_cluster_silhouettes(600, 198, 4.5, generator)
        verdict = test.verdict(4, scores, tested=10)
        assert verdict.poisoned, verdict
        assert 170 <= verdict.suspects <= test.window(600)[1]


def test_silhouettes_of_clean_two_means_splits_are_calibrated() -> None:
    """The same silhouettes for clean classes (one Gaussian cut in two, its valley at 40–50% of
    the class): the valley test's wider and deeper windows keep P(p ≤ a) within three binomial
    standard errors of a over 300 classes of 150."""
    generator = torch.Generator().manual_seed(13)
    test = BreakTest.valley()
    p = torch.tensor(
        [
            test.verdict(0, two_cluster_silhouettes(150, 0, 0.0, generator), 1).p_value
            for _ in range(300)
        ]
    )
    for a in (0.05, 0.01):
        tolerance = 3 * (a * (1 - a) / len(p)) ** 0.5
        assert float((p <= a).double().mean()) <= a + tolerance, a


@pytest.mark.parametrize("name", ["activation-clustering", "raw-clustering"])
def test_planted_one_class_backdoor_names_only_that_class(name: str) -> None:
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    result = build_detector(name, n_init=2).fit(case.evidence).result
    assert result.poisoned_classes == [1]
    assert result.threshold["rule"] == "verdict"
    assert not result.flagged[case.labels != 1].any()
    assert torch.equal(result.flagged, case.is_poison)


@pytest.mark.parametrize("goes_to", ["own label", "source class"])
def test_exclusionary_reclassification_confirms_or_clears_a_named_class(
    goes_to: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The named class's suspects, classified by the model retrained without them: kept as their
    claimed label, the group is a genuine mode and the verdict is cleared; sent to another class,
    the verdict stands and names that class as the source."""
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    excluded = fake_retraining(monkeypatch, 1 if goes_to == "own label" else 0)
    result = build_detector("activation-clustering", n_init=2).fit(case.evidence).result
    assert len(excluded) == 1 and torch.equal(excluded[0], case.is_poison)
    (verdict,) = [v for v in result.verdicts if v.label == 1]
    assert verdict.check is not None and verdict.check["test"] == "exclusionary reclassification"
    if goes_to == "own label":
        assert result.poisoned_classes == [] and not result.flagged.any()
        assert verdict.check["legitimate"] and not verdict.poisoned
    else:
        assert result.poisoned_classes == [1] and torch.equal(result.flagged, case.is_poison)
        assert verdict.check["source_class"] == 0 and not verdict.check["legitimate"]
    unconfirmed = build_detector("activation-clustering", n_init=2, confirm=None)
    assert unconfirmed.fit(case.evidence).result.poisoned_classes == [1]
    assert len(excluded) == 1  # confirm=None never retrains


@pytest.mark.parametrize("goes_to", ["own label", "source class"])
def test_spectral_signatures_confirms_its_named_class(
    goes_to: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spectral Signatures' named group, classified by the model retrained without it, as for
    the clustering detectors: kept as its claimed label it is a genuine mode and the class is
    cleared; sent to another class the verdict stands. ``confirm=None`` never retrains."""
    case = make_case(poisoned_classes=(2,), n_per_class=150, shift=16.0)
    excluded = fake_retraining(monkeypatch, 2 if goes_to == "own label" else 0)
    result = build_detector("spectral-signatures", seed=4).fit(case.evidence).result
    assert len(excluded) == 1 and torch.equal(excluded[0], case.is_poison)
    verdict = result.verdicts[2]
    assert verdict.check is not None and verdict.check["test"] == "exclusionary reclassification"
    if goes_to == "own label":
        assert result.poisoned_classes == [] and not result.flagged.any()
    else:
        assert result.poisoned_classes == [2] and torch.equal(result.flagged, case.is_poison)
        assert verdict.check["source_class"] == 0
    unconfirmed = build_detector("spectral-signatures", confirm=None).fit(case.evidence).result
    assert unconfirmed.poisoned_classes == [2] and len(excluded) == 1


@pytest.mark.parametrize("name", ["activation-clustering", "raw-clustering", "spectral-signatures"])
def test_clean_set_names_no_class_and_flags_nothing(name: str) -> None:
    case = make_case(poison_fraction=0.0, n_per_class=120)
    result = build_detector(name).fit(case.evidence).result
    assert result.poisoned_classes == []
    assert not result.flagged.any()
    assert {int(k) for k in result.threshold["per_class"]} == {0, 1, 2}
    assert all(v["cutoff"] is None for v in result.threshold["per_class"].values())


def test_spectral_signatures_names_a_strongly_shifted_class() -> None:
    case = make_case(poisoned_classes=(2,), n_per_class=150, shift=16.0)
    result = build_detector("spectral-signatures").fit(case.evidence).result
    assert result.poisoned_classes == [2]
    assert torch.equal(result.flagged, case.is_poison)


def test_user_thresholds_override_the_verdicts_which_are_still_reported() -> None:
    case = make_case(poison_fraction=0.0, n_per_class=100)
    result = (
        build_detector("activation-clustering", threshold=Contamination(0.1))
        .fit(case.evidence)
        .result
    )
    assert int(result.flagged.sum()) == 30  # 10% of every class, judged clean or not
    assert len(result.verdicts) == 3 and result.poisoned_classes == []
    assert result.threshold["rule"] == "contamination"


def test_detectors_without_verdicts_keep_their_paper_rule_and_say_so() -> None:
    case = make_case()
    result = build_detector("dnn-uncertainty").fit(case.evidence).result
    assert result.verdicts == ()
    assert result.threshold["rule"] == "paper" and "verdict" in result.threshold["why"]


def test_verdict_threshold_text() -> None:
    assert parse_threshold("verdict") == VerdictRule()
    assert parse_threshold("verdict:0.01") == VerdictRule(0.01)
    assert VerdictRule(0.01).describe() == "verdict:0.01" and VerdictRule().describe() == "verdict"
    for bad in ("verdict:2", "verdict:0", "verdict:x"):
        with pytest.raises(ConfigError, match="verdict"):
            parse_threshold(bad)
    with pytest.raises(ConfigError, match="max_fraction"):
        BreakTest(max_fraction=0.8)
    with pytest.raises(ConfigError, match="widths"):
        BreakTest(widths=(1, 0))
    with pytest.raises(ConfigError, match="gap_margin"):
        BreakTest(gap_margin=-0.1)


def test_the_default_windows_are_unchanged_by_the_valley_options() -> None:
    """A zero margin reproduces the windows ending at k_max: the same p-value and cut for every
    detector that keeps the default test."""
    generator = torch.Generator().manual_seed(14)
    scores = torch.cat(
        [
            torch.randn(300, generator=generator, dtype=torch.float64),
            5 + torch.rand(40, generator=generator, dtype=torch.float64),
        ]
    )
    a = BreakTest().statistic(scores)
    b = BreakTest(widths=(1, 2, 4, 8), gap_margin=0.0).statistic(scores)
    assert a == b and a is not None and a[1] == 40
    wide = BreakTest.valley().statistic(scores)
    assert wide is not None and wide[1] == 40


def planted_classes(kinds: dict[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of ten classes of 600: "strong" a Gaussian class with 60 samples 8σ above it (the
    default test names it), "weak" a two-cluster split's silhouettes with a third planted whose
    valley the default windows miss and the valley test names (p 1 and 4·10⁻⁶ for seed 7),
    "mode" the same shape as a clean class's genuine second mode (seeds 8, 9, 20), any other
    class plain Gaussian."""
    generator = torch.Generator().manual_seed(15)
    modes = iter((8, 9, 20))
    parts = []
    for c in range(10):
        kind = kinds.get(c, "clean")
        if kind in ("weak", "mode"):
            seed = 7 if kind == "weak" else next(modes)
            parts.append(
                two_cluster_silhouettes(600, 198, 4.5, torch.Generator().manual_seed(seed))
            )
            continue
        scores = torch.randn(600, generator=generator, dtype=torch.float64)
        if kind == "strong":
            scores[:60] += 8.0
        parts.append(scores)
    return torch.cat(parts), torch.arange(10).repeat_interleave(600)


def test_the_second_stage_names_the_weak_class_of_an_all_to_all_attack() -> None:
    """Nine classes the default test names and one whose poisons sit across a valley: the first
    stage names nine (at least half of ten), so every class is tested again in the valley form,
    Holm's procedure over all ten, and the tenth is named with stage 2; each class keeps the
    verdict, and the flags, of its stage with the smaller p-value."""
    scores, labels = planted_classes({c: "strong" for c in range(9)} | {9: "weak"})
    alone, alone_flags = class_verdicts(scores, labels)
    assert [v.label for v in alone if v.poisoned] == list(range(9))
    second, second_flags = class_verdicts(scores, labels, BreakTest.valley())
    verdicts, flags = class_verdicts(scores, labels, escalation=BreakTest.valley())
    assert [v.label for v in verdicts if v.poisoned] == list(range(10))
    for first, again, kept in zip(alone, second, verdicts, strict=True):
        better = again if again.p_value < first.p_value else first
        assert kept == replace(better, stage=2 if better is again else 1)
        chosen = second_flags if better is again else alone_flags
        assert torch.equal(flags[labels == kept.label], chosen[labels == kept.label])
    weak = verdicts[9]
    assert weak.stage == 2 and weak.level == pytest.approx(0.05) and weak.p_value <= 1e-4
    assert 170 <= weak.suspects <= 210
    # the same test twice is no second stage (a detector whose first test is the valley form)
    again, _ = class_verdicts(scores, labels, BreakTest.valley(), escalation=BreakTest.valley())
    assert all(v.stage == 1 for v in again)


def test_the_second_stage_leaves_a_one_to_one_attack_alone() -> None:
    """One poisoned class and three clean classes with a genuine second mode that the valley
    test would name on its own: the first stage names one class, below the quorum of five, so
    no second stage runs and the clean modes stay clean, verdict for verdict."""
    kinds = {0: "strong", 3: "mode", 5: "mode", 7: "mode"}
    scores, labels = planted_classes(kinds)
    valley, _ = class_verdicts(scores, labels, BreakTest.valley())
    assert {3, 5, 7} <= {v.label for v in valley if v.poisoned}  # what the rule protects
    alone, alone_flags = class_verdicts(scores, labels)
    verdicts, flags = class_verdicts(scores, labels, escalation=BreakTest.valley())
    assert [v.label for v in verdicts if v.poisoned] == [0]
    assert verdicts == alone and torch.equal(flags, alone_flags)
    assert all(v.stage == 1 for v in verdicts)


def test_the_second_stage_retests_a_class_the_first_named_only_weakly() -> None:
    """A class the first stage names at Holm's last step (p near alpha) is tested again too and
    keeps the valley test's far smaller p-value, which a combination of detectors can use; a
    class the first stage names and the second does not keeps the first stage's verdict."""
    from poisonlab.defenses.verdicts import _better

    scores, labels = planted_classes({c: "strong" for c in range(9)} | {9: "weak"})
    first = BreakTest().verdict(9, scores[labels == 9], 1)
    weak_first = replace(first, poisoned=True, p_value=0.02, level=0.05)
    again = replace(BreakTest.valley().verdict(9, scores[labels == 9], 10), stage=2)
    assert again.poisoned and again.p_value < 1e-4
    assert _better(weak_first, again) is again
    unnamed_again = replace(again, poisoned=False)
    assert _better(weak_first, unnamed_again) is weak_first
    assert _better(replace(weak_first, poisoned=False), unnamed_again) is unnamed_again
    tie = replace(again, p_value=weak_first.p_value)
    assert _better(weak_first, tie) is weak_first


def test_escalation_quorum_is_half_the_classes_and_at_least_two() -> None:
    from poisonlab.defenses.verdicts import escalation_quorum

    assert [escalation_quorum(k) for k in (1, 2, 3, 4, 5, 10, 43)] == [2, 2, 2, 2, 3, 5, 22]


def _all_to_all_with_a_weak_tenth() -> tuple[torch.Tensor, torch.Tensor, Evidence]:
    scores, labels = planted_classes({c: "strong" for c in range(9)} | {9: "weak"})
    images = torch.zeros(len(labels), 1, 2, 2)
    return scores, labels, Evidence(ImageDataset(images, labels, 10))


def test_the_verdict_threshold_sets_the_level() -> None:
    """verdict:A is the family-wise level of fit's verdicts: a class named at the default 0.05
    (p about 4e-17) is not named at 1e-20."""
    scores, labels = planted_classes({0: "strong"})
    evidence = Evidence(ImageDataset(torch.zeros(len(labels), 1, 2, 2), labels, 10))
    assert Planted(scores).fit(evidence).result.poisoned_classes == [0]
    strict = Planted(scores, threshold="verdict:1e-20").fit(evidence).result
    assert strict.poisoned_classes == [] and not strict.flagged.any()
    assert strict.verdicts[0].level == pytest.approx(1e-20 / 10)  # Holm's first step


def test_detectors_run_the_second_stage_in_fit() -> None:
    """A detector that gives verdicts gets the second stage from fit (the valley form by
    default); Heatmap Clustering, whose first test is the valley form, gets no second one."""
    scores, _, evidence = _all_to_all_with_a_weak_tenth()
    result = Planted(scores).fit(evidence).result
    assert result.poisoned_classes == list(range(10))
    assert result.verdicts[9].stage == 2
    assert Planted._escalation_test(0.01) == BreakTest.valley(0.01)
    hc = build_detector("heatmap-clustering")
    assert hc._escalation_test(0.05) is None


def test_the_confirmation_runs_once_over_both_stages_and_can_clear_a_second_stage_class() -> None:
    """fit's confirmation sees the classes of both stages in one call, and a stage-2 class it
    finds legitimate keeps its stage but is no longer named and loses its flags."""
    scores, labels, evidence = _all_to_all_with_a_weak_tenth()
    calls: list[list[int]] = []

    class ClearsNine(Planted):
        def _confirm(
            self, evidence: Evidence, verdicts: tuple[ClassVerdict, ...], flags: torch.Tensor
        ) -> tuple[tuple[ClassVerdict, ...], torch.Tensor]:
            calls.append([v.label for v in verdicts if v.poisoned])
            cleared = tuple(replace(v, poisoned=False) if v.label == 9 else v for v in verdicts)
            return cleared, flags & (labels != 9)

    result = ClearsNine(scores).fit(evidence).result
    assert calls == [list(range(10))]
    nine = result.verdicts[9]
    assert nine.stage == 2 and not nine.poisoned
    assert result.poisoned_classes == list(range(9))
    assert not result.flagged[labels == 9].any()  # the default threshold reads the verdicts
    assert result.flagged[labels == 0].any()


def test_a_class_below_min_samples_is_reported_untested() -> None:
    """A 60-sample class with five samples far above the rest: named when every class is judged,
    "not tested" (p-value 1, no suspects) below ``min_samples``; a 100-sample class is judged."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(60, generator=g, dtype=torch.float64)
    scores[:5] += 12.0
    assert BreakTest().verdict(0, scores, 1).poisoned
    small = BreakTest(min_samples=100).verdict(0, scores, 1)
    assert not small.poisoned and small.p_value == 1.0 and small.suspects == 0
    assert small.untested == "not tested: 60 < 100 samples" and small.n == 60
    assert small.to_dict()["untested"] == small.untested  # reaches summary.json
    large = torch.cat([scores, torch.randn(40, generator=g, dtype=torch.float64)])
    judged = BreakTest(min_samples=100).verdict(0, large, 1)
    assert judged.poisoned and judged.untested is None
    with pytest.raises(ConfigError, match="min_samples"):
        BreakTest(min_samples=-1)


def test_two_means_detectors_do_not_judge_classes_below_the_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small classes (27 clean samples and a 3-sample group of another class's images, the
    stand-in of a genuine sub-mode that a model trained on a few hundred images leaves unfitted):
    judged, raw clustering names the class; below MIN_CLASS_SIZE it reports every class untested,
    and the combined decision with Spectral Signatures names none and says which member could not
    judge them. Spectral Signatures, calibrated at any size (docs/methods.md), still judges."""
    from poisonlab.defenses.clustering import TwoMeansDetector
    from poisonlab.defenses.fusion import combine, verdict_sentence
    from poisonlab.defenses.verdicts import MIN_CLASS_SIZE

    case = make_case(poisoned_classes=(1,), n_per_class=27, poison_fraction=0.1)
    assert MIN_CLASS_SIZE == 100 and TwoMeansDetector.verdict_min_class == MIN_CLASS_SIZE
    raw = build_detector("raw-clustering", n_init=2, confirm=None).fit(case.evidence).result
    spectral = build_detector("spectral-signatures").fit(case.evidence).result
    assert raw.poisoned_classes == [] and not raw.flagged.any()
    assert [v.untested for v in raw.verdicts] == [
        "not tested: 27 < 100 samples",
        "not tested: 30 < 100 samples",
        "not tested: 27 < 100 samples",
    ]
    assert all(v.untested is None for v in spectral.verdicts)
    decision = combine([raw, spectral], case.labels)
    assert decision.poisoned_classes == [] and not decision.removed.any()
    assert decision.per_class["1"]["untested_by"] == ["raw-clustering"]
    assert verdict_sentence(decision, ["0", "1", "2"]) == (
        "classes 0–2 look clean (too few samples for raw-clustering to judge classes 0–2)"
    )
    monkeypatch.setattr(TwoMeansDetector, "verdict_min_class", 0)
    judged = build_detector("raw-clustering", n_init=2, confirm=None).fit(case.evidence).result
    assert judged.poisoned_classes == [1]


def test_the_verdict_sentence_names_classes_no_member_judged() -> None:
    """Classes every member left untested are "not judged", not "clean"."""
    from poisonlab.defenses.base import DetectionResult
    from poisonlab.defenses.fusion import combine, verdict_sentence

    labels = torch.tensor([0] * 150 + [1] * 40 + [2] * 150)
    verdicts = (
        ClassVerdict(0, False, 1.0, 0.6, 0.05, 0, None, 150),
        ClassVerdict(1, False, math.nan, 1.0, 0.05, 0, None, 40, untested="not tested: 40 < 100"),
        ClassVerdict(2, False, 1.0, 0.3, 0.05, 0, None, 150),
    )
    everything = torch.ones(len(labels), dtype=torch.bool)
    result = DetectionResult(
        "raw-clustering", {}, torch.zeros(len(labels), dtype=torch.float64), ~everything,
        everything, {}, 0.0, verdicts=verdicts,
    )  # fmt: skip
    decision = combine([result], labels)
    assert verdict_sentence(decision, ["0", "1", "2"]) == (
        "classes 0, 2 look clean; class 1 not judged (too few samples)"
    )
