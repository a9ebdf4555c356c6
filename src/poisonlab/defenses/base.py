"""The detector contract: one float suspicion score per sample; flags from a separate threshold.

Every defense subclasses :class:`Detector`, declares its hyper-parameters in ``__init__`` and
implements :meth:`Detector._score`, which reads what it needs from an :class:`Evidence` and
returns a :class:`ScoreSet` (scores, higher = more suspicious; the paper's own flags; optionally
scores of clean held-out samples, and JSON-ready extras). :meth:`Detector.fit` times it, applies
the threshold and keeps a frozen :class:`DetectionResult`.

**Inductive and transductive detectors** (scikit-learn's novelty / outlier-detection distinction,
as for ``LocalOutlierFactor(novelty=True)``): an *inductive* detector (``inductive = True``) keeps
what it fitted (per-class centroids, a singular direction, class densities, a Bayesian copy of the
model) and scores new samples with it through :meth:`Detector.score_samples`; the same code scores
a clean held-out set, the reference of target-FPR thresholds. A *transductive* detector only ranks
the samples it was fitted on; its :meth:`Detector.score_samples` raises
:class:`TransductiveError`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from poisonlab.data.dataset import DATASET, ImageDataset
from poisonlab.defenses.evidence import Evidence, MissingInput, Part
from poisonlab.defenses.holdout_check import check_held_out
from poisonlab.defenses.thresholds import ScoreSet, Threshold, VerdictRule, parse_threshold
from poisonlab.defenses.verdicts import BreakTest, ClassVerdict, class_verdicts, take_trailing
from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.registry import Registry
from poisonlab.validation import CLASSES, ConstraintList, InstanceOf, Validated, check_param


@dataclass(frozen=True, eq=False, repr=False)
class DetectionResult:
    """A detector's verdict on one data set.

    scores : float64 (N,), higher = more suspicious, NaN where the sample was not analysed
    flagged : bool (N,)
    analysed : bool (N,), samples the detector looked at (e.g. only the chosen classes)
    threshold : how flags were decided (rule name and cut values)
    extras : JSON-ready details the detector returned in its :class:`ScoreSet`
    verdicts : per-class verdicts (:mod:`poisonlab.defenses.verdicts`) of detectors that give
        them (``gives_verdicts``), computed whatever the threshold; empty for the others
    verdict_scores : float64 (N,) or None, the within-class statistic the verdicts read when it
        is not ``scores`` (e.g. the clustering detectors' Fisher projection)
    """

    detector: str
    params: dict[str, Any]
    scores: Tensor
    flagged: Tensor
    analysed: Tensor
    threshold: dict[str, Any]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)
    verdicts: tuple[ClassVerdict, ...] = ()
    verdict_scores: Tensor | None = None

    @property
    def poisoned_classes(self) -> list[int]:
        """Classes the verdicts call poisoned (empty for detectors without verdicts)."""
        return [v.label for v in self.verdicts if v.poisoned]

    def __repr__(self) -> str:
        """The detector, its flags, the classes its verdicts name and its rule on one line, e.g.
        ``DetectionResult('spectral-signatures', 140 flagged of 1398 analysed, classes named
        [1, 2], rule verdict, 0.12 s)``: not every score, parameter and verdict it holds."""
        named = f", classes named {self.poisoned_classes}" if self.verdicts else ""
        return (
            f"DetectionResult({self.detector!r}, {int(self.flagged.sum())} flagged of "
            f"{int(self.analysed.sum())} analysed{named}, rule {self.threshold.get('rule')}, "
            f"{self.seconds:.2f} s)"
        )

    def flagged_per_class(self, labels: Tensor, num_classes: int) -> list[int]:
        """Number of flagged samples per claimed class."""
        return torch.bincount(labels[self.flagged], minlength=num_classes).tolist()


class TransductiveError(PoisonlabError, TypeError):
    """:meth:`Detector.score_samples` on a detector that ranks only the data it was fitted on."""


_EVIDENCE = InstanceOf(Evidence, "an Evidence (Evidence(data, model, holdout=...))")


class Detector(Validated, ABC):
    """Base class of every defense.

    Class attributes declare what a detector needs, so callers (``poisonlab scan``) can skip it
    with a clear reason instead of faking a result: ``needs_model``, ``needs_holdout``,
    ``needs_lgm``. ``per_class`` detectors analyse each claimed class separately and honour
    ``classes`` (None = every class). ``inductive`` detectors score new samples after fitting
    (:meth:`score_samples`); the others are transductive (module docstring).
    ``gives_verdicts`` detectors rank samples within each claimed class; :meth:`fit` then also
    says per class whether it looks poisoned (:mod:`poisonlab.defenses.verdicts`), and the
    default threshold (:class:`VerdictRule`) flags nothing in a class judged clean.

    Hyper-parameters are declared in ``_parameter_constraints`` (:mod:`poisonlab.validation`) and
    checked in ``__init__`` through ``_set_params``, so a bad value fails when the detector is
    built, before any model is trained or any data is read, with a message naming the detector,
    the parameter, the value and the accepted range. ``threshold`` may be given as its text
    (``contamination:0.1``), parsed by :func:`~poisonlab.defenses.thresholds.parse_threshold`.
    """

    name: ClassVar[str]
    needs_model: ClassVar[bool] = True
    needs_holdout: ClassVar[bool] = False
    needs_lgm: ClassVar[bool] = False
    per_class: ClassVar[bool] = False
    inductive: ClassVar[bool] = False
    gives_verdicts: ClassVar[bool] = False
    verdict_min_class: ClassVar[int] = 0  # classes with fewer samples get no verdict (p = 1)
    _threshold_constraints: ClassVar[ConstraintList] = [
        None,
        InstanceOf(
            Threshold,
            "a Threshold or its text (verdict, verdict:A, paper, contamination:F, fpr:F, value:V)",
        ),
    ]

    def __init__(
        self, *, threshold: Threshold | str | None = None, classes: Sequence[int] | None = None
    ) -> None:
        if isinstance(threshold, str):  # configs and CLI flags name thresholds as text
            try:
                threshold = parse_threshold(threshold)
            except ConfigError as exc:
                raise ConfigError(f"{self.name} {exc}") from None
        checked: Threshold | None = check_param(
            self.name, "threshold", threshold, self._threshold_constraints
        )
        self.threshold: Threshold = checked or VerdictRule()
        if classes is not None and not self.per_class:
            raise ConfigError(f"{self.name} scores all classes at once; it takes no classes=")
        self.classes = check_param(self.name, "classes", classes, [None, CLASSES])

    def params(self) -> dict[str, Any]:
        """Hyper-parameters, JSON-ready (the threshold as its short description)."""
        values: dict[str, Any] = {}
        for key, value in vars(self).items():
            if key.startswith("_") or key.endswith("_"):
                continue
            values[key] = value.describe() if isinstance(value, Threshold) else value
        return values

    def analysed_classes(self, evidence: Evidence) -> list[int]:
        """Classes to analyse: ``classes`` or every class present in the data."""
        present = evidence.labels().unique().tolist()
        if self.classes is None:
            return present
        self._check_classes(evidence)
        return [c for c in self.classes if c in present]

    def _check_classes(self, evidence: Evidence) -> None:
        """A ConfigError naming this detector and ``classes`` for a class the data lacks."""
        bad = [c for c in self.classes or () if not 0 <= c < evidence.num_classes]
        if bad:
            raise ConfigError(
                f"{self.name} `classes`: class {bad[0]} does not exist in data set "
                f"{evidence.data.name!r} (0..{evidence.num_classes - 1})"
            )

    def _confirm(
        self, evidence: Evidence, verdicts: tuple[ClassVerdict, ...], flags: Tensor
    ) -> tuple[tuple[ClassVerdict, ...], Tensor]:
        """Hook: a second look at the classes the verdicts name (default: none); returns the
        verdicts and flags, cleared for the classes it finds legitimate."""
        return verdicts, flags

    def _held_out_verdict_scores(self, evidence: Evidence) -> Tensor | None:
        """Hook: the clean held-out samples scored on the scale of the verdicts' cut-offs by the
        state :meth:`_score` fitted, for the held-out check of the classes the verdicts name
        (:mod:`poisonlab.defenses.holdout_check`); None (the default) runs no check."""
        return None

    @classmethod
    def _break_test(cls, alpha: float) -> BreakTest:
        """The per-class test of :meth:`fit` at level ``alpha``: the default windows of
        :class:`~poisonlab.defenses.verdicts.BreakTest`, judging classes of at least
        ``verdict_min_class`` samples."""
        return BreakTest(alpha=alpha, min_samples=cls.verdict_min_class)

    @classmethod
    def _escalation_test(cls, alpha: float) -> BreakTest | None:
        """The second stage of :meth:`fit`'s verdicts at level ``alpha``: when the first names
        at least half of the classes (evidence of an all-to-all attack), every class is tested
        again in the valley form, Holm's procedure over all of them
        (:meth:`~poisonlab.defenses.verdicts.BreakTest.valley`;
        :func:`~poisonlab.defenses.verdicts.class_verdicts`), with the same smallest class. None
        runs no second stage; a detector whose first test already is the valley form gets none."""
        return BreakTest.valley(alpha, min_samples=cls.verdict_min_class)

    @staticmethod
    def _verdict_scale(scores: Tensor) -> Tensor:
        """The increasing map under which the per-class break test reads this detector's scores
        (:func:`~poisonlab.defenses.verdicts.class_verdicts`); the identity by default."""
        return scores

    @abstractmethod
    def _score(self, evidence: Evidence) -> ScoreSet:
        """Scores for every sample of ``evidence.data`` (NaN where not analysed)."""

    def _score_new(self, evidence: Evidence, part: Part) -> Tensor:
        """Scores of the samples of ``part`` under the state :meth:`_score` fitted.

        Inductive detectors implement it. It serves :meth:`score_samples` (``part="data"`` of an
        Evidence over the new samples) and the clean held-out reference (``part="holdout"`` of the
        Evidence the detector is being fitted on), so both are scored by the same code.
        """
        raise TransductiveError(self._transductive_message())

    def _transductive_message(self) -> str:
        return (
            f"{self.name} is transductive: it ranks only the samples it was fitted on and cannot "
            "score new ones; fit it on data that holds them"
        )

    def score_samples(self, data: ImageDataset | Evidence) -> Tensor:
        """Suspicion scores of new samples under the fitted state, float64 (N,), on the CPU.

        ``data`` is an :class:`ImageDataset` (its representations are computed with the model the
        detector was fitted with) or an :class:`Evidence` over the new samples holding that same
        model (to reuse representations already computed). Their labels are the claimed labels;
        samples of classes the detector did not fit score NaN. Fitted state is never changed.

        The name and the meaning follow scikit-learn's ``score_samples`` (the public "score" of
        a fitted estimator on new samples), except that higher scores are more suspicious, as
        everywhere in poisonlab. (``score`` is a hyper-parameter of ``bnn`` and
        ``dnn-uncertainty``, so the method cannot take that name.)

        Raises
        ------
        TransductiveError
            For a transductive detector (``inductive = False``).
        RuntimeError
            Before :meth:`fit`.
        ConfigError
            When ``data`` is an Evidence holding another model than the fitted one.
        """
        if not self.inductive:
            raise TransductiveError(self._transductive_message())
        return self._score_new(self._new_evidence(data, "score_samples"), "data").double().cpu()

    def _new_evidence(self, data: ImageDataset | Evidence, caller: str) -> Evidence:
        """An Evidence over new samples with the fitted model (checked when one is given)."""
        if not hasattr(self, "result_"):
            raise RuntimeError(f"{self.name}: call fit() before {caller}()")
        model, device, batch_size = self._fit_context_
        if not isinstance(data, Evidence):
            check_param(f"{self.name}.{caller}", "data", data, [DATASET, _EVIDENCE])
            return Evidence(data, model, device=device, batch_size=batch_size)
        if self.needs_model and data.model is not model:
            raise ConfigError(
                f"{self.name}.{caller}: the Evidence holds another model than the one the "
                "detector was fitted with; pass the new samples as an ImageDataset, or an "
                "Evidence over them with the fitted model"
            )
        return data

    def _holdout_reference(
        self, evidence: Evidence, classes: Sequence[int] | None = None
    ) -> Tensor | None:
        """Scores of the clean held-out samples (of ``classes`` when given; NaN dropped).

        None without a held-out set. Inductive detectors return it as their ScoreSet's
        ``reference``, the anchor of target-FPR thresholds.
        """
        if evidence.holdout is None:
            return None
        scores = self._score_new(evidence, "holdout").double().cpu()
        keep = ~torch.isnan(scores)
        if classes is not None:
            chosen = torch.tensor(list(classes), dtype=torch.long)
            keep &= torch.isin(evidence.labels("holdout"), chosen)
        return scores[keep]

    def fit(self, evidence: Evidence) -> Detector:
        """Score ``evidence.data``, apply the threshold, and store ``result_``; returns self.

        Raises
        ------
        ConfigError
            Naming this detector and the input the Evidence lacks (a model, an LGM head, a clean
            held-out set, the held-out scores its threshold cuts on).
        """
        check_param(self.name, "evidence", evidence, [_EVIDENCE])
        self._check_needs(evidence)
        with self._named():
            self._fit(evidence)
        return self

    def _fit(self, evidence: Evidence) -> None:
        """:meth:`fit`'s work: scores, verdicts and their confirmation, flags, ``result_``."""
        started = time.perf_counter()
        self._fit_context_ = (evidence.model, evidence.device, evidence.batch_size)
        scored = self._score(evidence)
        scores = scored.scores.double().cpu()
        if scores.shape != (len(evidence.data),):
            raise RuntimeError(f"{self.name} returned {tuple(scores.shape)} scores")
        analysed = ~torch.isnan(scores)
        labels = evidence.labels()
        if self.gives_verdicts:
            alpha = getattr(self.threshold, "alpha", VerdictRule.alpha)
            tested = scores if scored.verdict_scores is None else scored.verdict_scores.double()
            verdicts, verdict_flags = class_verdicts(
                tested.cpu(),
                labels,
                self._break_test(alpha),
                scale=self._verdict_scale,
                escalation=self._escalation_test(alpha),
            )
            verdicts, verdict_flags = self._confirm(evidence, verdicts, verdict_flags)
            if evidence.holdout is not None and any(v.poisoned for v in verdicts):
                held = self._held_out_verdict_scores(evidence)
                if held is not None:
                    verdicts, verdict_flags = check_held_out(
                        verdicts, verdict_flags, labels, held, evidence.labels("holdout"), alpha
                    )
            verdicts, verdict_flags = take_trailing(verdicts, verdict_flags, tested.cpu(), labels)
            scored = replace(scored, verdicts=verdicts, verdict_flags=verdict_flags)
        seconds = time.perf_counter() - started  # scoring, verdicts and their confirmation
        flags, description = self.threshold.flag(scored, labels)
        flags = flags.bool() & analysed
        ranking = scores  # what the flags cut: the verdict scores when the verdicts decided
        if description.get("rule") == "verdict" and scored.verdict_scores is not None:
            ranking = scored.verdict_scores.double().cpu()
            description = {**description, "cutoff_scores": "verdict_scores"}
        description = {**description, "per_class": class_cutoffs(ranking, flags, labels, analysed)}
        self.result_ = DetectionResult(
            detector=self.name,
            params=self.params(),
            scores=scores,
            flagged=flags,
            analysed=analysed,
            threshold=description,
            seconds=seconds,
            extras=dict(scored.extras),
            verdicts=tuple(scored.verdicts),
            verdict_scores=(
                None if scored.verdict_scores is None else scored.verdict_scores.double().cpu()
            ),
        )

    def _check_needs(self, evidence: Evidence) -> None:
        """A ConfigError naming this detector, before any work, for a class in ``classes`` the
        data lacks, or a threshold that cuts on clean held-out scores without a held-out set
        (:class:`TargetFPR` would otherwise fail only once the data is scored)."""
        self._check_classes(evidence)
        if self.threshold.needs_reference and evidence.holdout is None:
            raise MissingInput(
                "clean held-out samples, whose scores it cuts on: give them, "
                "Evidence(data, model, holdout=...)",
                owner=f"{self.name} threshold {self.threshold.describe()}",
            )

    @contextmanager
    def _named(self) -> Iterator[None]:
        """Put this detector's name in a :class:`MissingInput` raised by the Evidence ("Evidence
        needs a model ..." → "deep-features needs a model ...")."""
        try:
            yield
        except MissingInput as exc:
            raise exc.by(self.name) from None

    @property
    def result(self) -> DetectionResult:
        """The result of the last :meth:`fit` (an error before fitting)."""
        try:
            return self.result_
        except AttributeError:
            raise RuntimeError(f"{self.name}: call fit() first") from None


DETECTORS: Registry[type[Detector]] = Registry("defense")
register_detector = DETECTORS.register


def class_cutoffs(
    scores: Tensor, flags: Tensor, labels: Tensor, analysed: Tensor
) -> dict[str, dict[str, Any]]:
    """Per analysed class: samples analysed and flagged, and the cut-off in effect.

    ``scores`` is the ranking the flags were cut from (a detector's verdict scores when its
    verdicts decided, e.g. Activation Clustering's Fisher projections, else its scores). When a
    class's flags are its highest scores there, the lowest flagged score is the cut-off actually
    used, whatever the rule's own form; it is None when the class has no flag, or when an
    unflagged sample scores as high (the flags are then not a cut of that ranking).
    """
    out: dict[str, dict[str, Any]] = {}
    for c in labels[analysed].unique().tolist():
        members = analysed & (labels == c)
        chosen = scores[members & flags]
        cutoff = float(chosen.min()) if len(chosen) else None
        if cutoff is not None and bool((scores[members & ~flags] >= cutoff).any()):
            cutoff = None
        out[str(c)] = {"analysed": int(members.sum()), "flagged": len(chosen), "cutoff": cutoff}
    return out


def per_class_scores(n: int) -> Tensor:
    """A float64 (n,) tensor of NaN to fill class by class."""
    return torch.full((n,), float("nan"), dtype=torch.float64)
