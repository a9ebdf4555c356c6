"""The combined decision: Bonferroni min-p over members, Holm over classes, Borda fusion, user
cuts, the union."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from poisonlab.data.idx import FASHION_NAMES
from poisonlab.defenses import Contamination, FixedValue, TargetFPR, VerdictRule, build_detector
from poisonlab.defenses.fusion import (
    CombinedDecision,
    combine,
    combined_score,
    verdict_sentence,
    within_class_percentiles,
)
from poisonlab.errors import ConfigError
from tests.defenses.conftest import make_case


def fitted(case, *names: str):  # type: ignore[no-untyped-def]
    params = {"activation-clustering": {"n_init": 2}, "raw-clustering": {"n_init": 2}}
    return [build_detector(n, **params.get(n, {})).fit(case.evidence).result for n in names]


def test_within_class_percentiles_rank_each_class_on_its_own() -> None:
    scores = torch.tensor([1.0, 5.0, 3.0, 100.0, -1.0, float("nan")], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = within_class_percentiles(scores, labels)
    assert out[:5].tolist() == [0.0, 1.0, 0.5, 1.0, 0.0]
    assert torch.isnan(out[5])


def test_one_class_backdoor_is_named_and_only_its_poisons_removed() -> None:
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    results = fitted(case, "activation-clustering", "raw-clustering", "dnn-uncertainty")
    decision = combine(results, case.labels)
    assert decision.poisoned_classes == [1]
    assert decision.members == ["activation-clustering", "raw-clustering"]
    assert "dnn-uncertainty" in decision.excluded
    assert torch.equal(decision.removed, case.is_poison)
    entry = decision.per_class["1"]
    assert entry["poisoned"] and entry["removed"] == int(case.is_poison.sum())
    assert entry["p_value"] <= entry["level"] == pytest.approx(0.05 / 3)
    sentence = verdict_sentence(decision, ["0", "1", "2"])
    assert (
        sentence
        == f"class 1 looks poisoned: {entry['removed']} suspicious samples; classes 0, 2 look clean"
    )


def test_the_decision_is_measured_like_a_detector() -> None:
    """evaluate_detection(scan.decision, is_poison): the combined score ranked, the removed
    samples counted, over the samples a member analysed (it refused the decision by type)."""
    from poisonlab.metrics.detection import detection_metrics, evaluate_detection

    case = make_case(poisoned_classes=(1,), n_per_class=120)
    results = fitted(case, "spectral-signatures", "raw-clustering")
    only_1 = build_detector("raw-clustering", classes=[1], n_init=2).fit(case.evidence).result
    for decision in (combine(results, case.labels), combine([only_1], case.labels)):
        measured = evaluate_detection(decision, case.is_poison)
        known = ~torch.isnan(decision.score)
        expected = detection_metrics(
            case.is_poison[known], decision.score[known], decision.removed[known]
        )
        assert measured.to_dict() == expected.to_dict()
        assert measured.tp == int((decision.removed & case.is_poison).sum()) > 0
    assert measured.n == int((case.labels == 1).sum())  # one class analysed, one measured


def test_clean_set_removes_nothing_and_names_no_class() -> None:
    case = make_case(poison_fraction=0.0, n_per_class=120)
    decision = combine(fitted(case, "activation-clustering", "spectral-signatures"), case.labels)
    assert decision.poisoned_classes == [] and not decision.removed.any()
    assert verdict_sentence(decision, ["a", "b", "c"]) == "classes 0–2 look clean"


def test_a_decision_prints_as_one_line() -> None:
    """A notebook or a log shows the rule, the removals and the classes named, not every score."""
    removed = torch.zeros(1828, dtype=torch.bool)
    removed[:31] = True
    decision = CombinedDecision(
        torch.linspace(0, 1, 1828, dtype=torch.float64),
        removed,
        [8],
        "verdict",
        ["activation-clustering", "spectral-signatures"],
    )
    assert repr(decision) == (
        "CombinedDecision(rule verdict, 31 removed of 1828, classes named [8], members "
        "['activation-clustering', 'spectral-signatures'])"
    )


def test_an_all_to_all_verdict_names_its_classes_once() -> None:
    """Nine classes named: their ranges once and the counts in brackets, not nine clauses (the
    sentence wraps readably at 80 columns); one class named keeps the one-clause form."""

    def decision(removed: dict[int, int]) -> CombinedDecision:
        per_class = {
            str(c): {"poisoned": c in removed, "removed": removed.get(c, 0)} for c in range(10)
        }
        named, n = sorted(removed), sum(removed.values())
        return CombinedDecision(
            torch.zeros(n),
            torch.ones(n, dtype=torch.bool),
            named,
            "verdict",
            ["ac"],
            per_class=per_class,
        )

    names = list(FASHION_NAMES)
    counts = {c: 60 + c for c in range(10) if c != 4}
    sentence = verdict_sentence(decision(counts), names)
    assert sentence == (
        "classes 0–3, 5–9 look poisoned (581 suspicious samples: 0: 60, 1: 61, 2: 62, 3: 63, "
        "5: 65, 6: 66, 7: 67, 8: 68, 9: 69); class 4 looks clean"
    )
    assert len(sentence) < 160
    two = verdict_sentence(decision({3: 31, 8: 12}), names)
    assert (
        two
        == "classes 3, 8 look poisoned (43 suspicious samples: 3: 31, 8: 12); classes 0–2, 4–7, 9 look clean"
    )
    one = verdict_sentence(decision({8: 31}), names)
    assert one == "class 8 (Bag) looks poisoned: 31 suspicious samples; classes 0–7, 9 look clean"
    single = verdict_sentence(decision({8: 1}), names)
    assert single.startswith("class 8 (Bag) looks poisoned: 1 suspicious sample;"), single
    assert verdict_sentence(decision({3: 1, 8: 0}), names).startswith(
        "classes 3, 8 look poisoned (1 suspicious sample: 3: 1, 8: 0)"
    )


def test_min_p_is_bonferroni_corrected_over_members() -> None:
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    results = fitted(case, "activation-clustering", "raw-clustering")
    decision = combine(results, case.labels)
    for c, entry in decision.per_class.items():
        ps = [v.p_value for r in results for v in r.verdicts if v.label == int(c)]
        assert entry["p_value"] == pytest.approx(min(1.0, 2 * min(ps)))


def member(name: str, p_values: list[float], named: list[int], labels: torch.Tensor):  # type: ignore[no-untyped-def]
    """A hand-made member: class c's verdict has p-value p_values[c] (named when c in
    ``named``, with 5 suspects); scores rank each class's first five samples highest."""
    from poisonlab.defenses.base import DetectionResult
    from poisonlab.defenses.verdicts import ClassVerdict

    scores = torch.zeros(len(labels), dtype=torch.float64)
    for c in range(len(p_values)):
        scores[(labels == c).nonzero().flatten()[:5]] = 1.0
    verdicts = tuple(
        ClassVerdict(c, c in named, 9.0, p, 0.05, 5, 1.0, int((labels == c).sum()))
        for c, p in enumerate(p_values)
    )
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    return DetectionResult(
        name, {}, scores, flagged, torch.ones(len(labels), dtype=torch.bool), {}, 0.0,
        verdicts=verdicts,
    )  # fmt: skip


def test_classes_are_judged_by_holms_step_down() -> None:
    """One member, four classes: class 1 (p = 0.015) misses Bonferroni's 0.05 / 4 but passes
    Holm's second step 0.05 / 3 once class 0 is named; class 2 (0.03 > 0.05 / 2) stops the
    procedure, so class 3 (0.04 ≤ 0.05) is not reached."""
    labels = torch.arange(4).repeat_interleave(20)
    result = member("activation-clustering", [1e-6, 0.015, 0.03, 0.04], [0, 1, 2, 3], labels)
    decision = combine([result], labels)
    assert decision.poisoned_classes == [0, 1]
    assert [decision.per_class[str(c)]["level"] for c in range(4)] == pytest.approx(
        [0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05]
    )
    assert int(decision.removed.sum()) == 10
    assert decision.removed[(labels == 1).nonzero().flatten()[:5]].all()
    # verdict:0.2 is the family-wise level: 0.2 / 4, / 3, / 2, / 1 name all four classes
    loose = combine([result], labels, threshold=VerdictRule(0.2))
    assert loose.poisoned_classes == [0, 1, 2, 3] and loose.rule == "verdict"


def test_a_class_is_named_only_through_a_member_that_named_it() -> None:
    """Class 1 passes the combination's step but the one member with a small p did not name it
    (its own step-down stopped, or it never confirmed the class): the class stays clean."""
    labels = torch.arange(4).repeat_interleave(20)
    first = member("activation-clustering", [1e-6, 0.004, 1.0, 1.0], [0], labels)
    second = member("raw-clustering", [1e-6, 1.0, 1.0, 1.0], [0], labels)
    decision = combine([first, second], labels)
    assert decision.per_class["1"]["p_value"] <= decision.per_class["1"]["level"]
    assert decision.poisoned_classes == [0]
    assert not decision.removed[labels == 1].any()


def grouped_member(name: str, p: float, group: list[int], labels: torch.Tensor):  # type: ignore[no-untyped-def]
    """A member that names class 0 alone (p-value ``p``), its group the samples ``group`` of it:
    they score 10, 9, 8, ... in that order and every other sample 0."""
    from poisonlab.defenses.base import DetectionResult
    from poisonlab.defenses.verdicts import ClassVerdict

    scores = torch.zeros(len(labels), dtype=torch.float64)
    scores[group] = torch.arange(10.0, 10.0 - len(group), -1.0, dtype=torch.float64)
    verdicts = tuple(
        ClassVerdict(c, c == 0, 9.0, p if c == 0 else 1.0, 0.05, len(group) if c == 0 else 0,
                     1.0 if c == 0 else None, int((labels == c).sum()))
        for c in range(int(labels.max()) + 1)
    )  # fmt: skip
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    flagged[group] = True
    return DetectionResult(
        name, {}, scores, flagged, torch.ones(len(labels), dtype=torch.bool), {}, 0.0,
        verdicts=verdicts,
    )  # fmt: skip


def test_a_namer_with_another_group_does_not_order_the_removal() -> None:
    """Two members name class 0 for disjoint groups (e.g. the poisons, and a genuine mode the
    second one's confirmation let through): the samples that go are the most significant
    namer's group, not a mix of both rankings."""
    labels = torch.arange(4).repeat_interleave(20)
    first = grouped_member("activation-clustering", 1e-8, [0, 1, 2, 3, 4], labels)
    second = grouped_member("raw-clustering", 1e-6, [10, 11, 12, 13, 14, 15, 16], labels)
    decision = combine([first, second], labels)
    entry = decision.per_class["0"]
    assert entry["named_by"] == ["activation-clustering", "raw-clustering"]
    assert entry["ordered_by"] == ["activation-clustering"]
    assert decision.removed.nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    # averaged with the second ranking, the cut of five would have mixed the two groups
    mixed = combined_score([first, second], labels)[:20]
    assert set(torch.sort(mixed, descending=True, stable=True).indices[:5].tolist()) != set(
        range(5)
    )


def test_the_group_most_namers_found_is_the_one_removed() -> None:
    """The most significant namer's group is another set of samples than the group the two other
    namers share: the shared group goes, cut at the break of the more significant of those two."""
    labels = torch.arange(4).repeat_interleave(20)
    alone = grouped_member("raw-clustering", 1e-9, [10, 11, 12, 13, 14, 15, 16], labels)
    first = grouped_member("activation-clustering", 1e-8, [0, 1, 2, 3, 4], labels)
    second = grouped_member("spectral-signatures", 1e-6, [4, 3, 2, 1, 0, 5], labels)
    decision = combine([alone, first, second], labels)
    entry = decision.per_class["0"]
    assert entry["named_by"] == ["raw-clustering", "activation-clustering", "spectral-signatures"]
    assert entry["ordered_by"] == ["activation-clustering"]
    assert entry["group_found_by"] == ["activation-clustering", "spectral-signatures"]
    assert decision.removed.nonzero().flatten().tolist() == [0, 1, 2, 3, 4]


def test_the_most_significant_namer_of_the_group_decides_what_goes() -> None:
    """The second namer found the same group (half of it shared) but ranks three other samples
    at its top: what goes is the first namer's group above its own break, not the top of the
    averaged rankings, which would swap half of it for those three."""
    labels = torch.arange(4).repeat_interleave(20)
    first = grouped_member("activation-clustering", 1e-8, [10, 11, 12, 13, 14, 15], labels)
    second = grouped_member("raw-clustering", 1e-6, [0, 1, 2, 13, 14, 15], labels)
    decision = combine([first, second], labels)
    entry = decision.per_class["0"]
    assert entry["ordered_by"] == ["activation-clustering"]
    assert entry["group_found_by"] == ["activation-clustering", "raw-clustering"]
    assert entry["cutoff"] == first.verdicts[0].cutoff
    assert decision.removed.nonzero().flatten().tolist() == [10, 11, 12, 13, 14, 15]
    averaged = combined_score([first, second], labels)[:20]
    top = torch.sort(averaged, descending=True, stable=True).indices[:6]
    assert set(top.tolist()) == {0, 1, 10, 13, 14, 15}  # what averaging would have removed


def test_combined_score_is_the_mean_member_percentile() -> None:
    case = make_case()
    results = fitted(case, "activation-clustering", "spectral-signatures")
    expected = (
        within_class_percentiles(results[0].scores, case.labels)
        + within_class_percentiles(results[1].scores, case.labels)
    ) / 2
    torch.testing.assert_close(combined_score(results, case.labels), expected)
    assert torch.isnan(combined_score([], case.labels)).all()


def test_user_thresholds_cut_the_combined_score() -> None:
    case = make_case(poison_fraction=0.0, n_per_class=100)
    results = fitted(case, "activation-clustering", "spectral-signatures")
    decision = combine(results, case.labels, threshold=Contamination(0.1))
    assert int(decision.removed.sum()) == 30 and decision.rule == "contamination:0.1"
    high = combine(results, case.labels, threshold=FixedValue(0.9))
    assert torch.equal(high.removed, high.score > 0.9)
    with pytest.raises(ConfigError, match="combined score"):
        combine(results, case.labels, threshold=TargetFPR(0.05))


def test_union_rule_removes_every_flag() -> None:
    case = make_case()
    results = fitted(case, "activation-clustering", "dnn-uncertainty")
    decision = combine(results, case.labels, rule="union")
    assert torch.equal(decision.removed, results[0].flagged | results[1].flagged)
    with pytest.raises(ConfigError, match="union"):
        combine(results, case.labels, rule="majority")


def test_union_under_a_users_cut_names_no_class() -> None:
    """With a user's cut the flags come from the cut, so the union names no class (the verdicts
    it overrides are still recorded per detector); under the verdict rule it names theirs."""
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    verdict = fitted(case, "activation-clustering")
    assert combine(verdict, case.labels, rule="union").poisoned_classes == [1]
    params = {"n_init": 2, "threshold": Contamination(0.1)}
    cut = [build_detector("activation-clustering", **params).fit(case.evidence).result]
    assert cut[0].poisoned_classes == [1]
    decision = combine(cut, case.labels, rule="union")
    assert decision.poisoned_classes == []
    assert torch.equal(decision.removed, cut[0].flagged)


def test_a_verdict_outside_the_members_is_reported_not_combined() -> None:
    """Heatmap Clustering gives verdicts but is not a member (fusion.NOT_MEMBERS): its result,
    however it judged the classes, leaves the combined decision as the members made it."""
    case = make_case(poisoned_classes=(1,), n_per_class=120)
    (ac,) = fitted(case, "activation-clustering")
    every_class = torch.ones_like(ac.flagged)
    hc = dataclasses.replace(ac, detector="heatmap-clustering", flagged=every_class)
    alone, both = combine([ac], case.labels), combine([ac, hc], case.labels)
    assert hc.verdicts and both.members == ["activation-clustering"]
    assert "heatmap-clustering" in both.excluded
    assert torch.equal(both.removed, alone.removed)
    assert both.poisoned_classes == alone.poisoned_classes == [1]
