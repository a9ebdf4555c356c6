"""Detection metrics: how well a detector's scores and flags separate poisons from clean samples.

Positive always means **poisoned** (docs/methods.md#detection-metrics). Everything is computed over
the samples the detector analysed (``DetectionResult.analysed``); samples of classes it did not look
at are left out, as in Schulth et al. 2022, whose ACC/TPR/TNR are computed over the analysed class
only.

Definitions
-----------
- Confusion counts at the detector's threshold: TP = flagged poisons, FP = flagged clean samples,
  TN = unflagged clean samples, FN = unflagged poisons.
- ACC = (TP + TN) / n, TPR = TP / (TP + FN), TNR = TN / (TN + FP), FPR = 1 − TNR,
  precision = TP / (TP + FP), F1 = 2·TP / (2·TP + FP + FN) (= 2·precision·TPR / (precision + TPR)).
- AUROC: the probability that a random poison scores higher than a random clean sample, ties
  counting one half (the Mann–Whitney U statistic divided by n_poison·n_clean), which is the
  trapezoidal area under the ROC curve: ``sklearn.metrics.roc_auc_score``.
- AUPR is **average precision** (step-wise, not interpolated): AP = Σ_k (R_k − R_{k−1})·P_k over
  the distinct score thresholds taken from the highest down:
  ``sklearn.metrics.average_precision_score``. ``aupr_in`` is the same with clean samples as the
  positive class and the scores negated (Subedar et al. 2019 does not state its positive class).
- ROC and PR curves are ``sklearn.metrics.roc_curve`` (every threshold kept) and
  ``precision_recall_curve``.
- TPR at a fixed FPR: the largest TPR among ROC points whose FPR does not exceed the target (no
  interpolation between points, so it never promises more than a real cut achieves).

scikit-learn computes the curves and areas. The only code of our own is the guard for a single
class (no poisons, or only poisons, among the analysed samples), where scikit-learn warns, raises
or returns a recall of 1 without positives: there the undefined quantity is NaN.

A quantity whose denominator is zero (AUROC with only one kind of sample, TPR without poisons,
precision with nothing flagged...) is NaN, and ``notes`` says why; nothing raises for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from poisonlab.errors import ConfigError
from poisonlab.validation import short_repr

NAN = float("nan")


class Scored(Protocol):
    """What :func:`evaluate_detection` reads from a detector's result (a ``DetectionResult``) or a
    scan's decision (a ``CombinedDecision``): per-sample scores, flags, and which samples were
    analysed. A protocol, so metrics need not
    import the defenses that produce it."""

    @property
    def scores(self) -> Tensor: ...  # noqa: D102
    @property
    def flagged(self) -> Tensor: ...  # noqa: D102
    @property
    def analysed(self) -> Tensor: ...  # noqa: D102


@dataclass(frozen=True, repr=False)
class RocCurve:
    """ROC points from the strictest cut down: ``fpr[0] = tpr[0] = 0`` at threshold +inf.

    Point i is the rate of samples with ``score >= thresholds[i]`` (one point per distinct score,
    as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def __repr__(self) -> str:
        """``RocCurve(1390 points)``: not every point (read ``fpr``, ``tpr``, ``thresholds``)."""
        return f"RocCurve({len(self.fpr)} points)"


@dataclass(frozen=True, repr=False)
class PrCurve:
    """Precision and recall for ``score >= thresholds[i]``, thresholds decreasing (recall
    rising)."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray

    def __repr__(self) -> str:
        """``PrCurve(1389 points)``: not every point."""
        return f"PrCurve({len(self.precision)} points)"


@dataclass(frozen=True, repr=False)
class DetectionMetrics:
    """Every detection metric for one detector on one data set (see the module docstring)."""

    n: int
    n_poison: int
    n_clean: int
    n_flagged: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float
    tpr: float
    tnr: float
    fpr: float
    precision: float
    f1: float
    auroc: float
    aupr: float
    aupr_in: float
    target_fpr: float
    tpr_at_fpr: float
    roc: RocCurve
    pr: PrCurve
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:
        """Every count and rate (4 significant digits) on one line, the curves by their size,
        e.g. ``DetectionMetrics(n=1398, ..., auroc=0.9716, ..., roc=RocCurve(1390 points), ...)``:
        it printed every curve point, hundreds of lines."""
        parts = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            parts.append(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value!r}")
        return f"DetectionMetrics({', '.join(parts)})"

    def to_dict(self, *, curves: bool = True) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None); ``curves=False`` leaves the curve points out."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, (RocCurve, PrCurve)):
                if curves:
                    out[name] = {k: _json_list(v) for k, v in vars(value).items()}
            elif isinstance(value, float):
                out[name] = None if math.isnan(value) else value
            elif isinstance(value, tuple):
                out[name] = list(value)
            else:
                out[name] = value
        return out


def _json_list(values: np.ndarray) -> list[float | None]:
    """Floats for JSON, with ±inf and NaN as None."""
    return [float(v) if np.isfinite(v) else None for v in values.tolist()]


def _as_numpy(values: Tensor | np.ndarray | Any, dtype: type, what: str = "input") -> np.ndarray:
    """A 1-d NumPy copy of a tensor or array-like (``what`` names it in the error)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array: np.ndarray = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{what} must be a 1-d array, got shape {array.shape}")
    return array


def _truth_and_scores(
    is_poison: Tensor | np.ndarray, scores: Tensor | np.ndarray, caller: str
) -> tuple[np.ndarray, np.ndarray]:
    """``is_poison`` (bool) and ``scores`` (float64) as 1-d arrays of one length, the scores
    finite; a ValueError naming ``caller`` and the argument otherwise (scikit-learn's own says
    only "Input contains NaN")."""
    truth = _as_numpy(is_poison, bool, f"{caller} is_poison")
    values = _as_numpy(scores, np.float64, f"{caller} scores")
    if len(truth) != len(values):
        raise ValueError(
            f"{caller}: is_poison and scores differ in length: {len(truth)}, {len(values)}"
        )
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(
            f"{caller} scores must be finite, got {bad} NaN or infinite of {len(values)} (a "
            "detector's NaN marks a sample it did not analyse: keep result.analysed, or use "
            "evaluate_detection(result, is_poison))"
        )
    return truth, values


def _ratio(num: int, den: int) -> float:
    return num / den if den else NAN


def confusion_counts(is_poison: np.ndarray, flagged: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) with positive = poisoned."""
    tp = int(np.sum(is_poison & flagged))
    fp = int(np.sum(~is_poison & flagged))
    tn = int(np.sum(~is_poison & ~flagged))
    fn = int(np.sum(is_poison & ~flagged))
    return tp, fp, tn, fn


def _single_class_counts(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct scores from the highest down, number of samples scoring >= each)."""
    values, counts = np.unique(scores, return_counts=True)
    return values[::-1].astype(np.float64), np.cumsum(counts[::-1]).astype(np.float64)


def _both_classes(is_poison: np.ndarray) -> bool:
    return bool(is_poison.any()) and not bool(is_poison.all())


def roc_points(is_poison: Tensor | np.ndarray, scores: Tensor | np.ndarray) -> RocCurve:
    """ROC curve points (``sklearn.metrics.roc_curve``); rates are NaN for a class that is absent.

    With both classes present this is scikit-learn's curve with every threshold kept
    (``drop_intermediate=False``). With one class only, scikit-learn warns and, for an empty input,
    raises; the guard returns the same thresholds with the absent class's rate NaN instead.
    ``is_poison`` (bool) and ``scores`` (finite, higher = more suspicious) are (n,) arrays or
    tensors.
    """
    is_poison, scores = _truth_and_scores(is_poison, scores, "roc_points")
    if _both_classes(is_poison):
        from sklearn.metrics import roc_curve

        fpr, tpr, thresholds = roc_curve(is_poison, scores, drop_intermediate=False)
        return RocCurve(
            fpr.astype(np.float64), tpr.astype(np.float64), thresholds.astype(np.float64)
        )
    values, above = _single_class_counts(scores)
    if not len(scores):
        return RocCurve(np.full(1, NAN), np.full(1, NAN), np.full(1, np.inf))
    rate = np.r_[0.0, above / len(scores)]
    nan = np.full_like(rate, NAN)
    only_poisons = bool(is_poison.all())
    return RocCurve(
        fpr=nan if only_poisons else rate,
        tpr=rate if only_poisons else nan,
        thresholds=np.r_[np.inf, values],
    )


def pr_points(is_poison: Tensor | np.ndarray, scores: Tensor | np.ndarray) -> PrCurve:
    """Precision–recall points, one per distinct score from the highest down.

    With both classes present these are ``sklearn.metrics.precision_recall_curve``'s points in
    reverse (scikit-learn lists thresholds rising and appends the (precision 1, recall 0) end
    point, which has no threshold and is dropped). With one class only scikit-learn sets recall to
    1 without positives; the guard keeps precision exact (0 or 1) and recall NaN when undefined.
    Inputs as :func:`roc_points`.
    """
    is_poison, scores = _truth_and_scores(is_poison, scores, "pr_points")
    if _both_classes(is_poison):
        from sklearn.metrics import precision_recall_curve

        precision, recall, thresholds = precision_recall_curve(is_poison, scores)
        return PrCurve(
            precision[:-1][::-1].astype(np.float64),
            recall[:-1][::-1].astype(np.float64),
            thresholds[::-1].astype(np.float64),
        )
    values, above = _single_class_counts(scores)
    if len(scores) and is_poison.all():
        return PrCurve(np.ones_like(above), above / len(scores), values)
    return PrCurve(np.zeros_like(above), np.full_like(above, NAN), values)


def auroc(is_poison: Tensor | np.ndarray, scores: Tensor | np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score`` (ties count ½); NaN with a single class. Inputs as
    :func:`roc_points`."""
    is_poison, scores = _truth_and_scores(is_poison, scores, "auroc")
    if not _both_classes(is_poison):
        return NAN
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(is_poison, scores))


def average_precision(is_poison: Tensor | np.ndarray, scores: Tensor | np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score``; NaN without positives, 1 with positives only.
    Inputs as :func:`roc_points`."""
    is_poison, scores = _truth_and_scores(is_poison, scores, "average_precision")
    if not is_poison.any():
        return NAN
    if is_poison.all():
        return 1.0  # precision is 1 at every cut
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(is_poison, scores))


def tpr_at_fpr(roc: RocCurve, target: float) -> float:
    """Largest TPR over ROC points with FPR <= ``target`` (NaN when a class is absent)."""
    if np.isnan(roc.fpr).any() or np.isnan(roc.tpr).any():
        return NAN
    admissible = roc.fpr <= target + 1e-12
    return float(roc.tpr[admissible].max())


def detection_metrics(
    is_poison: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    flagged: Tensor | np.ndarray,
    *,
    target_fpr: float = 0.05,
) -> DetectionMetrics:
    """All metrics for ground truth ``is_poison`` (bool (n,)), ``scores`` (finite, higher = more
    suspicious) and the detector's ``flagged`` (bool (n,)) over the same n analysed samples."""
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must lie in [0, 1], got {target_fpr}")
    truth, values = _truth_and_scores(is_poison, scores, "detection_metrics")
    flags = _as_numpy(flagged, bool, "detection_metrics flagged")
    if len(flags) != len(truth):
        raise ValueError(
            f"detection_metrics: flagged and is_poison differ in length: {len(flags)}, {len(truth)}"
        )
    n, n_poison = len(truth), int(truth.sum())
    n_clean = n - n_poison
    tp, fp, tn, fn = confusion_counts(truth, flags)
    notes: list[str] = []
    if n == 0:
        notes.append("no analysed samples: every rate is undefined")
    elif n_poison == 0:
        notes.append("no poisons among the analysed samples: TPR, AUROC, AUPR are undefined")
    elif n_clean == 0:
        notes.append("only poisons among the analysed samples: TNR, AUROC, AUPR-in are undefined")
    if tp + fp == 0 and n:
        notes.append("nothing flagged: precision is undefined")
    tpr, tnr, precision = _ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)  # the harmonic mean of precision and TPR
    roc = roc_points(truth, values)
    return DetectionMetrics(
        n=n,
        n_poison=n_poison,
        n_clean=n_clean,
        n_flagged=tp + fp,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        accuracy=_ratio(tp + tn, n),
        tpr=tpr,
        tnr=tnr,
        fpr=1.0 - tnr if not math.isnan(tnr) else NAN,
        precision=precision,
        f1=f1,
        auroc=auroc(truth, values),
        aupr=average_precision(truth, values),
        aupr_in=average_precision(~truth, -values),
        target_fpr=target_fpr,
        tpr_at_fpr=tpr_at_fpr(roc, target_fpr),
        roc=roc,
        pr=pr_points(truth, values),
        notes=tuple(notes),
    )


def evaluate_detection(
    result: Scored, is_poison: Tensor | np.ndarray, *, target_fpr: float = 0.05
) -> DetectionMetrics:
    """Metrics of a detector's result against the ground truth, over its analysed samples.

    ``result`` is a detector's result (``detector.fit(evidence).result``) or a scan's combined
    decision (``scan(...).decision``: its combined score and removed samples). ``is_poison`` is
    the attack's bool (N,) mask over the same N samples the detector scored
    (``PoisonedDataset.is_poison``).
    """
    if not all(hasattr(result, name) for name in ("scores", "flagged", "analysed")):
        raise ConfigError(
            "evaluate_detection result must be a detector's result (detector.fit(evidence)"
            f".result) or a scan's decision, got {type(result).__name__} {short_repr(result)}"
        )
    if hasattr(is_poison, "is_poison"):  # the PoisonedDataset itself, for its mask
        raise ConfigError(
            "evaluate_detection is_poison must be the bool (N,) ground-truth mask, got a "
            f"{type(is_poison).__name__}: pass its .is_poison"
        )
    truth = _as_numpy(is_poison, bool)
    analysed = _as_numpy(result.analysed, bool)
    if len(truth) != len(analysed):
        raise ValueError(f"{len(truth)} ground-truth labels for {len(analysed)} scored samples")
    scores = _as_numpy(result.scores, np.float64)
    flagged = _as_numpy(result.flagged, bool)
    return detection_metrics(
        truth[analysed], scores[analysed], flagged[analysed], target_fpr=target_fpr
    )
