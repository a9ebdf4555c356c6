"""Detection metrics against scikit-learn on random inputs, and hand-computed edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from poisonlab.defenses.base import DetectionResult
from poisonlab.metrics.detection import (
    auroc,
    average_precision,
    detection_metrics,
    evaluate_detection,
    pr_points,
    roc_points,
)


def random_case(seed: int, n: int = 200, ties: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.2
    scores = rng.normal(size=n) + 1.5 * truth
    if ties:
        scores = np.round(scores)  # a handful of distinct values, many ties across classes
    flagged = scores > np.quantile(scores, 0.75)
    return truth, scores, flagged


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_sklearn(seed: int, ties: bool) -> None:
    truth, scores, flagged = random_case(seed, ties=ties)
    m = detection_metrics(truth, scores, flagged)
    tn, fp, fn, tp = skm.confusion_matrix(truth, flagged, labels=[False, True]).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert m.accuracy == pytest.approx(skm.accuracy_score(truth, flagged))
    assert m.tpr == pytest.approx(skm.recall_score(truth, flagged))
    assert m.tnr == pytest.approx(skm.recall_score(~truth, ~flagged))
    assert m.precision == pytest.approx(skm.precision_score(truth, flagged))
    assert m.f1 == pytest.approx(skm.f1_score(truth, flagged))
    assert m.auroc == pytest.approx(skm.roc_auc_score(truth, scores), abs=1e-12)
    assert m.aupr == pytest.approx(skm.average_precision_score(truth, scores), abs=1e-12)
    assert m.aupr_in == pytest.approx(skm.average_precision_score(~truth, -scores), abs=1e-12)
    fpr, tpr, thresholds = skm.roc_curve(truth, scores, drop_intermediate=False)
    np.testing.assert_allclose(m.roc.fpr, fpr)
    np.testing.assert_allclose(m.roc.tpr, tpr)
    np.testing.assert_array_equal(m.roc.thresholds, thresholds)
    assert m.tpr_at_fpr == pytest.approx(tpr[fpr <= 0.05].max())
    precision, recall, pr_thresholds = skm.precision_recall_curve(truth, scores)
    np.testing.assert_allclose(m.pr.precision, precision[:-1][::-1])
    np.testing.assert_allclose(m.pr.recall, recall[:-1][::-1])
    np.testing.assert_array_equal(m.pr.thresholds, pr_thresholds[::-1])
    assert m.n == len(truth) and m.n_flagged == int(flagged.sum())


def test_hand_computed_example() -> None:
    """Scores 0.9 P, 0.8 C, 0.7 P, 0.6 C, 0.5 C with the top two flagged.

    Pairs (poison above clean): 0.9 beats 3, 0.7 beats 2 → AUROC = 5/6.
    AP: recall steps ½ at precision 1 (after 0.9) and ½ at precision 2/3 (after 0.7) → 5/6.
    """
    truth = np.array([True, False, True, False, False])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    flagged = np.array([True, True, False, False, False])
    m = detection_metrics(truth, scores, flagged, target_fpr=1 / 3)
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 1, 2, 1)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.tpr == pytest.approx(1 / 2) and m.tnr == pytest.approx(2 / 3)
    assert m.precision == pytest.approx(1 / 2) and m.f1 == pytest.approx(1 / 2)
    assert m.auroc == pytest.approx(5 / 6)
    assert m.aupr == pytest.approx(5 / 6)
    assert m.tpr_at_fpr == pytest.approx(1.0)  # at 0.7: FPR 1/3, TPR 1
    assert detection_metrics(truth, scores, flagged, target_fpr=0.0).tpr_at_fpr == 0.5


def test_ties_count_half() -> None:
    truth = np.array([True, False, True, False])
    same = np.zeros(4)
    assert auroc(truth, same) == 0.5
    assert average_precision(truth, same) == 0.5  # one threshold: precision = prevalence
    roc = roc_points(truth, same)
    np.testing.assert_array_equal(roc.fpr, [0.0, 1.0])
    np.testing.assert_array_equal(roc.tpr, [0.0, 1.0])
    assert auroc(truth, np.array([1.0, 1.0, 1.0, 0.0])) == 0.75  # two ties among four pairs


def test_no_poisons() -> None:
    truth = np.zeros(4, dtype=bool)
    m = detection_metrics(truth, np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 0, 1], bool))
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 1, 3, 0)
    assert m.tnr == 0.75 and m.fpr == 0.25 and m.precision == 0.0 and m.f1 == 0.0
    for value in (m.tpr, m.auroc, m.aupr, m.tpr_at_fpr):
        assert math.isnan(value)
    assert m.aupr_in == pytest.approx(skm.average_precision_score(~truth, [-0.1, -0.2, -0.3, -0.4]))
    assert any("no poisons" in note for note in m.notes)


def test_all_poisons() -> None:
    truth = np.ones(3, dtype=bool)
    m = detection_metrics(truth, np.array([0.3, 0.1, 0.2]), np.array([1, 0, 1], bool))
    assert (
        m.tpr == pytest.approx(2 / 3) and m.precision == 1.0 and m.accuracy == pytest.approx(2 / 3)
    )
    assert math.isnan(m.tnr) and math.isnan(m.auroc) and math.isnan(m.aupr_in)
    assert m.aupr == 1.0  # precision is 1 at every cut
    assert any("only poisons" in note for note in m.notes)


def test_nothing_flagged() -> None:
    truth = np.array([True, False, False])
    m = detection_metrics(truth, np.array([0.9, 0.1, 0.2]), np.zeros(3, bool))
    assert math.isnan(m.precision) and m.tpr == 0.0 and m.tnr == 1.0 and m.f1 == 0.0
    assert m.auroc == 1.0
    assert any("nothing flagged" in note for note in m.notes)


def test_empty_input() -> None:
    m = detection_metrics(np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
    assert m.n == 0 and math.isnan(m.accuracy) and math.isnan(m.auroc)
    assert len(m.roc.fpr) == 1 and len(m.pr.precision) == 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="finite"):
        detection_metrics(np.array([True, False]), np.array([np.nan, 1.0]), np.zeros(2, bool))
    with pytest.raises(ValueError, match="length"):
        detection_metrics(np.array([True]), np.array([1.0, 2.0]), np.zeros(2, bool))
    with pytest.raises(ValueError, match="target_fpr"):
        detection_metrics(np.array([True]), np.array([1.0]), np.zeros(1, bool), target_fpr=2.0)


def make_result(scores: list[float], flagged: list[bool]) -> DetectionResult:
    values = torch.tensor(scores, dtype=torch.float64)
    return DetectionResult(
        detector="test",
        params={},
        scores=values,
        flagged=torch.tensor(flagged),
        analysed=~torch.isnan(values),
        threshold={"rule": "paper"},
        seconds=0.0,
    )


def test_evaluate_detection_uses_analysed_samples_only() -> None:
    nan = float("nan")
    result = make_result([0.9, nan, 0.2, 0.7, nan], [True, False, False, True, False])
    truth = torch.tensor([True, True, False, False, False])
    m = evaluate_detection(result, truth)
    assert m.n == 3 and m.n_poison == 1 and m.n_clean == 2
    assert (m.tp, m.fp, m.tn, m.fn) == (1, 1, 1, 0)
    assert m.auroc == 1.0
    with pytest.raises(ValueError, match="ground-truth"):
        evaluate_detection(result, torch.tensor([True, False]))
    # target_fpr reaches the TPR-at-FPR: clean 0.9 above poison 0.8, clean 0.7 above poison 0.6
    ranked = make_result([0.9, 0.8, 0.7, 0.6], [False] * 4)
    truth = torch.tensor([False, True, False, True])
    assert evaluate_detection(ranked, truth).tpr_at_fpr == 0.0  # FPR <= 5%: nothing above 0.9
    assert evaluate_detection(ranked, truth, target_fpr=0.5).tpr_at_fpr == 0.5


def test_to_dict_is_strict_json() -> None:
    truth, scores, flagged = random_case(0, n=30)
    full = detection_metrics(truth, scores, flagged).to_dict()
    text = json.dumps(full, allow_nan=False)
    assert json.loads(text)["roc"]["thresholds"][0] is None  # +inf
    undefined = detection_metrics(np.zeros(3, bool), np.arange(3.0), np.zeros(3, bool))
    short = undefined.to_dict(curves=False)
    assert short["auroc"] is None and "roc" not in short and short["notes"]
    json.dumps(short, allow_nan=False)


def test_pr_points_order() -> None:
    curve = pr_points(np.array([True, False, True]), np.array([0.2, 0.5, 0.9]))
    np.testing.assert_array_equal(curve.thresholds, [0.9, 0.5, 0.2])
    np.testing.assert_allclose(curve.recall, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(curve.precision, [1.0, 0.5, 2 / 3])


@pytest.mark.parametrize("poisons", [False, True], ids=["no-poisons", "only-poisons"])
def test_single_class_guard_is_exact_and_silent(poisons: bool) -> None:
    """scikit-learn warns or raises with one class; the guard gives NaN for what is undefined."""
    import warnings

    truth = np.full(5, poisons)
    scores = np.array([0.3, 0.9, 0.3, 0.1, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UndefinedMetricWarning escapes
        m = detection_metrics(truth, scores, scores > 0.4)
        roc, pr = roc_points(truth, scores), pr_points(truth, scores)
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 0.9, 0.5, 0.3, 0.1])
    defined, undefined = (roc.tpr, roc.fpr) if poisons else (roc.fpr, roc.tpr)
    np.testing.assert_allclose(defined, [0.0, 0.2, 0.4, 0.8, 1.0])
    assert np.isnan(undefined).all()
    np.testing.assert_array_equal(pr.thresholds, [0.9, 0.5, 0.3, 0.1])
    np.testing.assert_array_equal(pr.precision, np.full(4, 1.0 if poisons else 0.0))
    if poisons:
        np.testing.assert_allclose(pr.recall, [0.2, 0.4, 0.8, 1.0])
        assert m.aupr == 1.0
    else:
        assert np.isnan(pr.recall).all() and math.isnan(m.aupr)
    assert math.isnan(m.auroc)


def test_curve_and_area_functions_take_tensors_and_name_bad_scores() -> None:
    """A detector's result is tensors, NaN where a sample was not analysed: the functions take
    tensors as arrays, and NaN scores get a message naming the function and the fix (it was
    scikit-learn's "Input contains NaN")."""
    truth, scores, _ = random_case(0)
    as_tensors = torch.from_numpy(truth), torch.from_numpy(scores)
    assert auroc(*as_tensors) == auroc(truth, scores)
    assert average_precision(*as_tensors) == average_precision(truth, scores)
    assert np.array_equal(roc_points(*as_tensors).tpr, roc_points(truth, scores).tpr)
    assert np.array_equal(pr_points(*as_tensors).recall, pr_points(truth, scores).recall)
    unanalysed = scores.copy()
    unanalysed[:5] = np.nan

    def metrics(truth, scores):  # type: ignore[no-untyped-def]
        return detection_metrics(truth, scores, np.zeros(len(truth), dtype=bool))

    metrics.__name__ = "detection_metrics"
    for function in (auroc, average_precision, roc_points, pr_points, metrics):
        name = function.__name__
        with pytest.raises(
            ValueError, match=rf"^{name} scores must be finite, got 5 NaN .*analysed"
        ):
            function(truth, unanalysed)
        with pytest.raises(ValueError, match=rf"^{name}: is_poison and scores differ in length"):
            function(truth[:10], scores)
        with pytest.raises(ValueError, match=rf"^{name} scores must be a 1-d array"):
            function(truth, scores.reshape(20, 10))
    with pytest.raises(ValueError, match=r"^detection_metrics: flagged and is_poison differ"):
        detection_metrics(truth, scores, np.zeros(3, dtype=bool))


def test_metrics_print_as_one_line_with_the_curves_by_size() -> None:
    """They printed every ROC and PR point (hundreds of lines for a scan's decision)."""
    truth, scores, flagged = random_case(0, n=1500)
    m = detection_metrics(truth, scores, flagged)
    text = repr(m)
    assert "\n" not in text and len(text) < 500
    assert f"auroc={m.auroc:.4g}" in text and f"tp={m.tp}," in text
    assert f"roc=RocCurve({len(m.roc.fpr)} points)" in text
    assert f"pr=PrCurve({len(m.pr.precision)} points)" in text and "notes=()" in text
