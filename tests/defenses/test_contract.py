"""The detector contract, checked for EVERY registered detector (sklearn ``estimator_checks`` style).

Detectors are collected from the registry at import time, so a newly registered defense joins
automatically; its evidence and fast settings come from the hooks in ``conftest.py``
(``CONTRACT_VARIANTS``, ``PREPARE``, ``BAD_PARAMS``). Checked: the registry name, score shape
(N,) and dtype float64, finiteness on analysed samples and NaN exactly on the others, a
class subset for per-class detectors, determinism, flags consistent with every threshold kind,
the model left exactly as it was (parameters, buffers, hooks, every module's own train/eval
mode, requires_grad, device: no in-place .to()), the caller's global random state untouched,
clear ConfigErrors for bad hyper-parameters and missing inputs, JSON-ready params and extras,
inductive scoring of new samples (or a TransductiveError), and one run on a real backdoored model.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from typing import Any

import pytest
import torch

from poisonlab.defenses import (
    DETECTORS,
    Contamination,
    Detector,
    Evidence,
    FixedValue,
    PaperRule,
    TargetFPR,
    TransductiveError,
    build_detector,
    detector_names,
)
from poisonlab.errors import ConfigError
from tests.borrowing import (
    assert_same_model,
    global_random_state,
    mixed_modes,
    model_snapshot,
    moves_of,
)
from tests.defenses.conftest import (
    BAD_PARAMS,
    CONTRACT_VARIANTS,
    FRESH_DRAWS,
    PREPARE,
    RealCase,
    SyntheticCase,
    make_case,
    plant_features,
)

NAMES = detector_names()
VARIANTS = [
    pytest.param(name, variant, params, id=f"{name}[{variant}]")
    for name in NAMES
    for variant, params in CONTRACT_VARIANTS.get(name, {"default": {}}).items()
]


def build_case(name: str, **kwargs: Any) -> SyntheticCase:
    """The planted case with what detector ``name`` needs (LGM head, extra representations)."""
    case = make_case(lgm=DETECTORS.get(name).needs_lgm, **kwargs)
    if name in PREPARE:
        PREPARE[name](case.evidence)
    return case


def fit(name: str, params: dict[str, Any], case: SyntheticCase, **extra: Any) -> Detector:
    return build_detector(name, **{**params, **extra}).fit(case.evidence)


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_consistent(name: str) -> None:
    cls = DETECTORS.get(name)
    assert issubclass(cls, Detector)
    assert cls.name == name
    assert cls.__doc__ and sys.modules[cls.__module__].__doc__, "document the class and module"
    for flag in ("needs_model", "needs_holdout", "needs_lgm", "per_class"):
        assert isinstance(getattr(cls, flag), bool)


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_scores_cover_every_sample(name: str, variant: str, params: dict[str, Any]) -> None:
    case = build_case(name)
    detector = fit(name, params, case)
    result = detector.result
    n = len(case.labels)
    assert result.scores.shape == (n,) and result.scores.dtype == torch.float64
    assert result.flagged.shape == (n,) and result.flagged.dtype == torch.bool
    assert result.analysed.all(), "every class is present, so every sample is analysed"
    assert torch.isfinite(result.scores).all()
    assert result.detector == name and result.seconds >= 0
    json.dumps(result.params)
    json.dumps(result.extras)
    json.dumps(result.threshold)


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_class_subset(name: str, variant: str, params: dict[str, Any]) -> None:
    case = build_case(name)
    if not DETECTORS.get(name).per_class:
        with pytest.raises(ConfigError):
            build_detector(name, classes=[1], **params)
        return
    result = fit(name, params, case, classes=[1]).result
    in_class = case.labels == 1
    assert torch.equal(result.analysed, in_class)
    assert torch.isfinite(result.scores[in_class]).all()
    assert torch.isnan(result.scores[~in_class]).all()
    assert not result.flagged[~in_class].any()


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_deterministic(name: str, variant: str, params: dict[str, Any]) -> None:
    first = fit(name, params, build_case(name)).result
    second = fit(name, params, build_case(name)).result
    torch.testing.assert_close(first.scores, second.scores, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(first.flagged, second.flagged)


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_paper_rule_flags_are_the_rule(name: str, variant: str, params: dict[str, Any]) -> None:
    case = build_case(name)
    detector = build_detector(name, threshold=PaperRule(), **params)
    scored = detector._score(case.evidence)
    result = detector.fit(case.evidence).result
    assert scored.rule_flags.shape == (len(case.labels),)
    assert torch.equal(result.flagged, scored.rule_flags.bool() & result.analysed)
    assert result.threshold["rule"] == "paper"


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_contamination_flags_top_fraction_per_class(
    name: str, variant: str, params: dict[str, Any]
) -> None:
    case = build_case(name)
    result = fit(name, params, case, threshold=Contamination(0.2)).result
    for c in case.labels.unique().tolist():
        members = (case.labels == c) & result.analysed
        flagged = result.flagged & members
        assert int(flagged.sum()) == round(0.2 * int(members.sum()))
        if flagged.any() and (members & ~result.flagged).any():
            assert result.scores[flagged].min() >= result.scores[members & ~result.flagged].max()


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_fixed_value_and_text_thresholds(name: str, variant: str, params: dict[str, Any]) -> None:
    case = build_case(name)
    result = fit(name, params, case).result
    cut = float(result.scores[result.analysed].median())
    fixed = fit(name, params, build_case(name), threshold=FixedValue(cut)).result
    assert torch.equal(fixed.flagged, torch.nan_to_num(fixed.scores, nan=-math.inf) > cut)
    text = fit(name, params, build_case(name), threshold=f"value:{cut!r}").result
    assert torch.equal(text.flagged, fixed.flagged)


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_target_fpr_uses_clean_reference(name: str, variant: str, params: dict[str, Any]) -> None:
    case = build_case(name)
    # the threshold that reads the reference (a detector may compute it for that one alone)
    scored = build_detector(name, threshold=TargetFPR(0.1), **params)._score(case.evidence)
    if scored.reference is None or len(scored.reference) == 0:
        with pytest.raises(ConfigError):
            fit(name, params, build_case(name), threshold=TargetFPR(0.1))
        return
    assert scored.reference.dtype == torch.float64 and torch.isfinite(scored.reference).all()
    result = fit(name, params, build_case(name), threshold=TargetFPR(0.1)).result
    cut = float(torch.quantile(scored.reference, 0.9))
    assert result.threshold["cutoff"] == pytest.approx(cut)
    assert torch.equal(result.flagged, result.analysed & (result.scores > cut))


def holdout_as_new_samples(name: str, case: SyntheticCase) -> Evidence:
    """The case's clean held-out images as a new set: an Evidence of their own, same model."""
    new = Evidence(case.evidence.holdout, case.evidence.model, device="cpu")
    plant_features(new, case.holdout_features, "data")
    if name in PREPARE:
        PREPARE[name](new)
    return new


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_inductive_scoring_of_new_samples(name: str, variant: str, params: dict[str, Any]) -> None:
    """An inductive detector scores new samples with what it fitted, as it scores its held-out
    reference; a transductive one refuses by name. Scoring changes nothing fitted."""
    case = build_case(name)
    detector = build_detector(name, **params)
    if not detector.inductive:
        with pytest.raises(TransductiveError, match=name):
            detector.fit(case.evidence).score_samples(case.evidence)
        return
    with pytest.raises(RuntimeError, match="fit"):
        detector.score_samples(case.evidence)
    result = detector.fit(case.evidence).result
    scores = detector.score_samples(holdout_as_new_samples(name, case))
    assert scores.dtype == torch.float64 and scores.shape == (len(case.evidence.holdout),)
    assert torch.isfinite(scores).all(), "every held-out class was fitted"
    again = detector.score_samples(case.evidence)
    assert detector.result is result
    if name in FRESH_DRAWS:
        assert torch.isfinite(again).all()
        return
    reference = detector._score_new(case.evidence, "holdout")
    torch.testing.assert_close(scores, reference, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(again, result.scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_new_samples_of_classes_not_fitted_score_nan(
    name: str, variant: str, params: dict[str, Any]
) -> None:
    cls = DETECTORS.get(name)
    if not (cls.inductive and cls.per_class):
        return
    case = build_case(name)
    detector = build_detector(name, classes=[1], **params).fit(case.evidence)
    scores = detector.score_samples(holdout_as_new_samples(name, case))
    in_class = case.evidence.labels("holdout") == 1
    assert torch.isfinite(scores[in_class]).all()
    assert torch.isnan(scores[~in_class]).all()


def test_score_samples_refuses_an_evidence_with_another_model() -> None:
    case = build_case("spectral-signatures")
    detector = build_detector("spectral-signatures").fit(case.evidence)
    other = make_case(seed=1)
    other.evidence.model = build_case("spectral-signatures").evidence.model
    with pytest.raises(ConfigError, match="another model"):
        detector.score_samples(other.evidence)


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_model_left_unchanged(name: str, variant: str, params: dict[str, Any]) -> None:
    case = build_case(name)
    model = case.evidence.model
    assert model is not None
    mixed_modes(model)  # per-module modes the detector must restore, not flatten
    before = model_snapshot(model)
    fit(name, params, case)
    assert_same_model(before, model_snapshot(model))
    assert not torch.nn.modules.module._global_forward_hooks


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_model_is_not_moved_in_place(name: str, variant: str, params: dict[str, Any]) -> None:
    """Neither the Evidence nor the detector calls .to()/.cuda()/.float() on the caller's model."""
    case = build_case(name)
    model = case.evidence.model
    assert model is not None
    with moves_of(model) as moves:
        evidence = Evidence(case.evidence.data, model, holdout=case.evidence.holdout, device="cpu")
        evidence._cache.update(case.evidence._cache)  # the planted representations
        fit(
            name,
            params,
            SyntheticCase(evidence, case.is_poison, case.features, case.holdout_features),
        )
    assert moves == [], f"the caller's model was moved in place ({moves[0]})"


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_caller_random_state_untouched(name: str, variant: str, params: dict[str, Any]) -> None:
    """A detector draws from its own seeded generators; the caller's global RNGs are left as is."""
    case = build_case(name)
    with torch.random.fork_rng():
        torch.manual_seed(12345)
        before = global_random_state()
        fit(name, params, case)
        assert global_random_state() == before


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyper_parameters_raise_config_error(name: str) -> None:
    cls = DETECTORS.get(name)
    with pytest.raises(ConfigError):
        cls(threshold=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        cls(threshold="median")
    for bad in BAD_PARAMS.get(name, []):
        with pytest.raises(ConfigError):
            cls(**bad)
    if cls.per_class:
        case = build_case(name)
        with pytest.raises(ConfigError, match="does not exist"):
            cls(classes=[99]).fit(case.evidence)


@pytest.mark.parametrize("name", NAMES)
def test_result_before_fit_is_an_error(name: str) -> None:
    with pytest.raises(RuntimeError, match="fit"):
        _ = DETECTORS.get(name)().result


@pytest.mark.parametrize("name", NAMES)
def test_missing_inputs_are_clear_errors(name: str) -> None:
    cls = DETECTORS.get(name)
    params = next(iter(CONTRACT_VARIANTS.get(name, {"default": {}}).values()))
    if cls.needs_model:
        case = make_case(with_model=False)
        with pytest.raises(ConfigError, match=rf"^{name} needs a model trained on the suspect"):
            cls(**params).fit(case.evidence)
    else:
        case = make_case(with_model=False)
        assert torch.isfinite(cls(**params).fit(case.evidence).result.scores).all()
    if cls.needs_holdout:
        case = build_case(name)
        case.evidence.holdout = None
        with pytest.raises(ConfigError, match=rf"^{name} needs a clean held-out set"):
            cls(**params).fit(case.evidence)
    if cls.needs_lgm:
        case = make_case(lgm=False)
        with pytest.raises(ConfigError, match=rf"^{name} needs a model trained with the LGM loss"):
            cls(**params).fit(case.evidence)


@pytest.mark.parametrize("name", NAMES)
def test_a_held_out_cut_without_a_held_out_set_is_refused_by_name(name: str) -> None:
    """threshold fpr: cuts on clean held-out scores: without a held-out set fit refuses before
    any work, naming the detector and the cut (it failed only after scoring, unnamed)."""
    params = next(iter(CONTRACT_VARIANTS.get(name, {"default": {}}).values()))
    case = build_case(name)
    case.evidence.holdout = None
    detector = build_detector(name, threshold="fpr:0.05", **params)
    detector._score = None  # type: ignore[assignment,method-assign]  # no scoring may start
    with pytest.raises(ConfigError, match=rf"^{name} threshold fpr:0.05 .*held-out samples"):
        detector.fit(case.evidence)


@pytest.mark.parametrize("name", [n for n in NAMES if DETECTORS.get(n).per_class])
def test_a_class_the_data_lacks_is_refused_by_name_before_work(name: str) -> None:
    """It read "class 12 does not exist (0..2)", naming neither the detector nor ``classes``,
    once the representations were computed."""
    params = next(iter(CONTRACT_VARIANTS.get(name, {"default": {}}).values()))
    detector = build_detector(name, classes=[1, 12], **params)
    detector._score = None  # type: ignore[assignment,method-assign]  # no scoring may start
    with pytest.raises(ConfigError, match=rf"^{name} `classes`: class 12 does not exist in data"):
        detector.fit(build_case(name).evidence)


@pytest.mark.parametrize("name", NAMES)
def test_registered_names_are_unique_classes(name: str) -> None:
    counts = Counter(DETECTORS.get(n) for n in NAMES)
    assert counts[DETECTORS.get(name)] == 1


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS)
def test_real_backdoored_model(
    name: str, variant: str, params: dict[str, Any], digits_backdoor: RealCase
) -> None:
    """Every detector runs end to end on a real trained model: shapes, finiteness, model intact."""
    if DETECTORS.get(name).needs_lgm:
        pytest.skip("the real case trains a softmax model; LGM detectors have their own tests")
    evidence: Evidence = digits_backdoor.evidence_factory()
    if name in PREPARE:
        PREPARE[name](evidence)
    before = model_snapshot(digits_backdoor.model)
    detector = build_detector(name, **params).fit(evidence)
    result = detector.result
    assert result.scores.shape == (len(evidence.data),)
    assert torch.isfinite(result.scores[result.analysed]).all()
    assert result.analysed.all()
    if detector.inductive and name not in FRESH_DRAWS:
        # new samples given as a plain ImageDataset: representations computed afresh by the
        # fitted model, scored as the held-out reference of the fit was
        assert evidence.holdout is not None
        new = detector.score_samples(evidence.holdout)
        torch.testing.assert_close(new, detector._score_new(evidence, "holdout"))
    assert_same_model(before, model_snapshot(digits_backdoor.model))
