"""The held-out check: a named group that clean held-out data share is a mode, not poisons."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binom

from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.fusion import combine, effective_p
from poisonlab.defenses.holdout_check import check_held_out, held_out_mode
from poisonlab.defenses.verdicts import ClassVerdict
from tests.defenses.conftest import fake_retraining, make_case, plant_features


def named(label: int = 0, *, suspects: int = 20, n: int = 200, cutoff: float = 2.0) -> ClassVerdict:
    return ClassVerdict(label, True, 30.0, 1e-4, 0.005, suspects, cutoff, n)


def held(above: int, below: int) -> torch.Tensor:
    return torch.cat([torch.full((above,), 3.0), torch.full((below,), 0.0)]).double()


def test_a_group_held_out_data_share_at_its_rate_is_a_mode() -> None:
    record = held_out_mode(named(), held(4, 36), 0.05)  # 10% of the class, 4 of 40 held out
    assert record is not None and record["mode"]
    assert (record["held_out"], record["above_cutoff"], record["expected"]) == (40, 4, 4.0)


def test_a_group_missing_from_held_out_data_stays_named() -> None:
    record = held_out_mode(named(), held(0, 40), 0.05)
    assert record is not None and not record["mode"]
    assert record["p_deficit"] == pytest.approx(0.9**40)


def test_a_few_held_out_samples_cannot_clear_a_class() -> None:
    """1 of 3 held-out samples above the cut is what a group of three quarters poisons could
    leave (5 clean among the 185 clean samples of the class: P(Bin(3, 5/185) >= 1) = 0.079 >
    0.05): only evidence clears."""
    record = held_out_mode(named(), held(1, 2), 0.05)
    assert record is not None and not record["mode"]
    assert record["p_present"] == pytest.approx(1 - (1 - 5 / 185) ** 3)


def test_the_present_bound_counts_the_clean_samples_only() -> None:
    """A group of 60 of 200 of which three quarters (45) are poisons leaves 15 clean samples
    above its cut among the 155 clean samples of the class, a rate of 15/155 = 0.097, not
    60/200/4 = 0.075: 6 of 30 held-out samples above the cut (P = 0.064 at 0.097, 0.022 at
    0.075) is not evidence of a mode."""
    record = held_out_mode(named(suspects=60, n=200), held(6, 24), 0.05)
    assert record is not None and record["p_deficit"] > 0.05
    assert record["p_present"] == pytest.approx(binom.sf(5, 30, 15 / 155))
    assert not record["mode"]


def test_poisons_among_many_clean_samples_leave_a_deficit() -> None:
    """A cut holding 217 of 600 samples (67 poisons and 150 clean): 150 of 600 held-out samples
    above it is far below the 217 the rate predicts, so the class stays named."""
    record = held_out_mode(named(suspects=217, n=600), held(150, 450), 0.05)
    assert record is not None and not record["mode"]
    assert record["p_deficit"] < 1e-4 and record["p_present"] < 1e-4


def test_no_cutoff_runs_no_check_and_no_held_out_sample_is_recorded() -> None:
    """Without a cut-off there is nothing to count; a named class the held-out set has no
    sample of stays named, and its record says the check could not run."""
    assert held_out_mode(named(cutoff=None), held(4, 36), 0.05) is None  # type: ignore[arg-type]
    record = held_out_mode(named(), torch.full((5,), float("nan")).double(), 0.05)
    assert record is not None and not record["mode"] and record["held_out"] == 0
    assert "no sample of this class" in record["skipped"]
    labels = torch.tensor([0] * 200)
    flags = torch.zeros(200, dtype=torch.bool)
    flags[:20] = True
    (verdict,), kept = check_held_out(
        (named(0),), flags, labels, held(4, 36), torch.full((40,), 1), 0.05
    )
    assert verdict.poisoned and verdict.holdout["skipped"]  # type: ignore[index]
    assert torch.equal(kept, flags)


def test_check_clears_only_the_mode_and_its_flags() -> None:
    labels = torch.tensor([0] * 200 + [1] * 200)
    flags = torch.zeros(400, dtype=torch.bool)
    flags[:20] = flags[200:220] = True
    verdicts = (named(0), named(1), ClassVerdict(2, False, 1.0, 0.5, 0.005, 0, None, 200))
    held_labels = torch.tensor([0] * 40 + [1] * 40)
    scores = torch.cat([held(4, 36), held(0, 40)])
    checked, kept = check_held_out(verdicts, flags, labels, scores, held_labels, 0.05)
    assert [v.poisoned for v in checked] == [False, True, False]
    assert checked[0].holdout["mode"] and not checked[1].holdout["mode"]  # type: ignore[index]
    assert checked[2].holdout is None  # a class not named is not checked
    assert not kept[:200].any() and kept[200:220].all()
    assert flags[:20].all()  # the caller's flags are not modified
    assert effective_p(checked[0]) == 1.0 and effective_p(checked[1]) == 1e-4


def mode_case(shared: bool) -> Evidence:
    """Class 0 holds a group 25 feature units off its mean (the planted "poisons", whose
    exclusionary retraining the tests stub to call them class 1, so it stands); with
    ``shared`` its clean held-out samples hold the same group at the same rate (a genuine mode),
    else none of them do (poisons exist only in the suspect data)."""
    case = make_case(
        n_per_class=150,
        poisoned_classes=(0,),
        poison_fraction=0.15,
        holdout_per_class=100,
        shift=25.0,
    )
    labels = case.labels
    if shared:
        clean0 = (labels == 0) & ~case.is_poison
        offset = case.features[case.is_poison].mean(0) - case.features[clean0].mean(0)
        held_labels = case.evidence.labels("holdout")
        features = case.holdout_features.clone()
        moved = (held_labels == 0).nonzero().flatten()[:15]  # 15% of the held-out 0s
        features[moved] += offset
        plant_features(case.evidence, features, "holdout")
    return case.evidence


@pytest.mark.parametrize("name", ["activation-clustering", "spectral-signatures"])
def test_a_mode_shared_by_held_out_data_is_cleared(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_retraining(monkeypatch, predicted=1)
    seeded = {} if name == "spectral-signatures" else {"seed": 0}
    poisoned = build_detector(name, **seeded).fit(mode_case(shared=False)).result
    mode = build_detector(name, **seeded).fit(mode_case(shared=True)).result
    assert poisoned.poisoned_classes == [0]
    assert not poisoned.verdicts[0].holdout["mode"]  # type: ignore[index]
    assert poisoned.verdicts[0].holdout["above_cutoff"] == 0  # type: ignore[index]
    assert mode.poisoned_classes == []
    assert mode.verdicts[0].holdout["mode"]  # type: ignore[index]
    assert not mode.flagged.any()
    cleared = combine([mode], mode_case(shared=True).labels())
    assert cleared.poisoned_classes == []
    assert cleared.per_class["0"]["modes_found_by"] == [name]
    kept = combine([poisoned], mode_case(shared=False).labels())
    assert kept.poisoned_classes == [0] and "modes_found_by" not in kept.per_class["0"]


def test_without_a_held_out_set_the_verdict_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_retraining(monkeypatch, predicted=1)
    evidence = mode_case(shared=True)
    alone = Evidence(evidence.data, evidence.model, holdout=None, device="cpu")
    for part_key, value in evidence._cache.items():
        if part_key[2] == "data":
            alone.put(part_key, value)
    result = build_detector("activation-clustering", seed=0).fit(alone).result
    assert result.poisoned_classes == [0]
    assert result.verdicts[0].holdout is None


@pytest.mark.parametrize("name", ["activation-clustering", "raw-clustering", "spectral-signatures"])
def test_held_out_samples_are_scored_on_the_scale_of_the_cutoff(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held-out set that is the suspect data itself scores as the verdicts read it: the
    Fisher projections of the split (the 2-means detectors; their separation scores, another
    scale, would count other samples against the cut) or spectral signatures' τ over the median,
    so the check counts the named group exactly, h = k̂ of m = n."""
    fake_retraining(monkeypatch, predicted=1)
    case = make_case(
        n_per_class=150, poisoned_classes=(0,), poison_fraction=0.15, holdout_per_class=0
    )
    evidence = Evidence(case.evidence.data, case.evidence.model, holdout=case.evidence.data)
    for part in ("data", "holdout"):
        plant_features(evidence, case.features, part)
    seeded = {} if name == "spectral-signatures" else {"seed": 0}
    detector = build_detector(name, **seeded).fit(evidence)
    result = detector.result
    read = result.scores if result.verdict_scores is None else result.verdict_scores
    held = detector._held_out_verdict_scores(evidence)
    assert held is not None
    torch.testing.assert_close(held.double(), read, rtol=1e-9, atol=1e-9, equal_nan=True)
    assert result.verdicts[0].suspects > 0
    record = result.verdicts[0].holdout
    assert record is not None
    assert (record["held_out"], record["above_cutoff"]) == (
        result.verdicts[0].n,
        result.verdicts[0].suspects,
    )
