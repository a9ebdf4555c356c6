"""Scan a suspect training set with one or more registered defenses, as one library call.

:func:`scan` is what ``poisonlab scan`` runs: it checks each selected detector's declared needs
(``needs_holdout``, ``needs_lgm``, ``needs_model``), skips the ones that cannot run with a reason
instead of faking a result, trains the default model on the suspect data when none is given,
builds one :class:`Evidence` per model so every representation is computed once and shared, and
runs the detectors. Any detector registered with ``@register_detector`` takes part without a
change here; representations it needs beyond the standard ones live in the Evidence cache.

Models. A given model (a :class:`Network` or a loaded :class:`Checkpoint`) serves every detector;
``lgm-likelihood`` is skipped unless it has an LGM head or an LGM model is given beside it
(``lgm_model``, e.g. the ``lgm-model`` folder an earlier scan saved), which only LGM detectors
read. A given model is borrowed: the Evidence neither moves it nor changes its train/eval modes. Without a model, the default one is trained
on the suspect data: ``cnn-small`` for images up to 32×32 and ``resnet20`` above (or ``arch``),
with :func:`~poisonlab.train.recipes.scan_recipe` (the default recipe, but 2 epochs from 20,000
images: a quarter of the time of 8; activation clustering and deep features separate the poisons
as well after 2 epochs, spectral signatures less well: bench/results/training_scan_recipe*.md;
from 20,000 images a softmax model trains in bfloat16 mixed precision on a device that computes it
natively: bench/results/scan_scale.md). The trained model's Evidence carries that recipe, so
the confirming retraining (exclusionary reclassification) repeats it, from 20,000 images for 1
epoch over at most 20,000 of the kept images unless ``epochs`` is given
(:func:`~poisonlab.train.recipes.scan_retrain_epochs` and ``scan_retrain_images``).
When an LGM detector is selected and no ``lgm_model`` is given, an LGM-head model is trained too,
``lgm-net`` (Yaseen et al.'s network, 2-d features; docs/methods.md, LGM loss) unless the images
are smaller than 8×8, and only LGM detectors read it. On the CPU with a core to spare it trains in a child process
(:mod:`poisonlab.train.background`, the same weights) while this process trains the softmax
model and runs the other detectors; LGM detectors run last. Representations (activations,
logits) come from one forward pass per part shared by every detector (:class:`Evidence`).

Decision and clean set. The detectors that rank within classes give per-class verdicts
(:mod:`poisonlab.defenses.verdicts`; when a detector's test names at least half of the classes,
an all-to-all attack, it tests every class again in the valley form, Holm's procedure over all
of them); :func:`poisonlab.defenses.fusion.combine` turns them into one decision: the classes
that look poisoned (Bonferroni min-p over the members, Holm's step-down over the classes at
family-wise level α = 0.05) and, in them only, the group most of a class's namers found, as its
most significant namer cut it (the samples above its break and their trailing members, in its
own order). That decision is ``ScanResult.decision`` and ``ScanResult.clean()`` drops its
removed samples. A user threshold (``contamination:``, ``fpr:``, ``value:``) cuts the combined
score instead, and ``decision="union"`` keeps the former rule: drop every sample any detector
that ran flagged. Detectors without verdicts (uncertainty, DeepFeatures, the LGM likelihood
filter) and Heatmap Clustering (its verdict is measured on Schulth et al.'s setting only, not on
the verdict bench) are reported beside the decision with the reason they are not part of it.

Which defenses run, each built with its validated parameters, is
:mod:`poisonlab.workflows.scan_selection`' job; inputs (objects or paths, each checked before any
training) are :mod:`poisonlab.workflows.scan_inputs`'; file output (``scores.csv``, ``summary.json``,
``clean.npz``) is :func:`poisonlab.workflows.scan_output.write_scan`'s; the command line lives in
``poisonlab.cli.scan_cmd``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from typing import Any

import torch
from torch import Tensor

from poisonlab import progress, runtime
from poisonlab.data.checks import check_training_data, data_warnings
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import DetectionResult, Detector, Evidence
from poisonlab.defenses.fusion import (
    RULES,
    CombinedDecision,
    combine,
    holdout_combined_score,
    verdict_sentence,
)
from poisonlab.defenses.thresholds import Threshold
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.models import Checkpoint, ModelConfig, Network, build_model
from poisonlab.train import TrainConfig, TrainResult, train_model
from poisonlab.train.background import BackgroundTraining, worth_it
from poisonlab.train.config import PRECISIONS
from poisonlab.train.recipes import (
    fast_bfloat16,
    scan_recipe,
    scan_retrain_epochs,
    scan_retrain_images,
)
from poisonlab.workflows.scan_inputs import (
    as_dataset,
    as_lgm_model,
    as_model,
    as_threshold,
    check_inputs,
    check_layers,
    check_reference_members,
    check_threshold,
)
from poisonlab.workflows.scan_selection import (
    build_detectors,
    resolve_defenses,
    selection_record,
    unmet_need,
)

logger = logging.getLogger(__name__)
# How a scan's own softmax model trains: "auto" picks bfloat16 on large data where it is native.
PRECISION_CHOICES = ("auto", *PRECISIONS)
UNION_RULE = "a sample is removed when any defense that ran flagged it"


def _check_precision(precision: str) -> None:
    if precision not in PRECISION_CHOICES:
        raise ConfigError(
            f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}"
        )


@dataclass(frozen=True)
class ModelUsed:
    """Which model a group of detectors read, and where it came from."""

    role: str  # "model" (every detector) or "lgm-model" (LGM detectors only)
    source: str  # "given", "checkpoint" or "trained"
    arch: str
    head: str
    path: str | None = None
    training: dict[str, Any] | None = None
    note: str | None = None  # how it was chosen when not told (the CLI: "found beside --model")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(vars(self))


@dataclass(frozen=True, eq=False)
class DefenseOutcome:
    """One selected defense: its result, or why it was skipped."""

    name: str
    result: DetectionResult | None = None
    skipped: str | None = None
    model_role: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False, repr=False)
class ScanResult:
    """Every selected defense's outcome on one data set."""

    data: ImageDataset
    outcomes: tuple[DefenseOutcome, ...]
    models: tuple[ModelUsed, ...]
    threshold: str
    holdout: ImageDataset | None = None
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)  # role → the model it read
    decision: CombinedDecision | None = None
    # how the defenses were chosen (scan_selection.selection_record): summary.json's "selection"
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def ran(self) -> tuple[DefenseOutcome, ...]:
        """Outcomes of the defenses that produced a result."""
        return tuple(o for o in self.outcomes if o.result is not None)

    @property
    def flagged_any(self) -> Tensor:
        """bool (N,): flagged by at least one defense that ran (the union rule)."""
        flags = torch.zeros(len(self.data), dtype=torch.bool)
        for outcome in self.ran:
            flags |= outcome.result.flagged  # type: ignore[union-attr]
        return flags

    @property
    def removed(self) -> Tensor:
        """bool (N,): the samples the decision removes (the union when there is no decision)."""
        return self.decision.removed if self.decision is not None else self.flagged_any

    def clean(self) -> ImageDataset:
        """The data without the removed samples, in the original order and with the original ids."""
        return self.data.subset(~self.removed)

    @property
    def verdict(self) -> str | None:
        """The verdict in one line, as ``poisonlab scan`` prints it and summary.json leads with:
        "class 8 looks poisoned: 31 suspicious samples; classes 0–7, 9 look clean" (None
        without a combined decision)."""
        if self.decision is None:
            return None
        return verdict_sentence(self.decision, self.data.class_names)

    def __repr__(self) -> str:
        """The data, the defenses that ran or were skipped, and the verdict, on one line: not
        every tensor and network it holds."""
        ran = ", ".join(o.name for o in self.ran) or "none"
        skipped = [o.name for o in self.outcomes if o.result is None]
        parts = [repr(self.data), f"ran: {ran}"]
        if skipped:
            parts.append(f"skipped: {', '.join(skipped)}")
        parts.append(f"removed {int(self.removed.sum())}")
        verdict = self.verdict  # a property that builds the sentence: once
        if verdict is not None:
            parts.append(f"verdict: {verdict!r}")
        return f"ScanResult({'; '.join(parts)})"


def default_architecture(shape: tuple[int, int, int], *, lgm: bool = False) -> str:
    """cnn-small from 6×6 up to 32×32, resnet20 otherwise (larger, or too small for cnn-small's
    two unpadded convolutions and pool); lgm-net (Yaseen et al.) for LGM models from 8×8 up."""
    _, h, w = shape
    if lgm and min(h, w) >= 8:
        return "lgm-net"
    return "cnn-small" if max(h, w) <= 32 and min(h, w) >= 6 else "resnet20"


def default_setup(
    data: ImageDataset,
    *,
    head: str = "softmax",
    arch: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    precision: str = "auto",
) -> tuple[ModelConfig, TrainConfig]:
    """The config and recipe of the default model (or ``arch``) for ``data``.

    ``precision`` "auto": a softmax model on a large data set trains in bfloat16 mixed precision
    on a ``device`` that computes it natively (:func:`~poisonlab.train.recipes.scan_recipe`);
    "float32" or "bfloat16" force that precision on a softmax model. LGM heads, whose
    log-likelihoods are differences of large squared distances, always stay float32.
    """
    _check_precision(precision)
    arch = arch or default_architecture(data.shape, lgm=head == "lgm")
    c, h, w = data.shape
    config = ModelConfig(arch, c, h, w, data.num_classes, head=head)
    softmax = head == "softmax"
    bfloat16 = softmax and device is not None and fast_bfloat16(device)
    recipe = scan_recipe(arch, len(data), bfloat16=bfloat16, epochs=epochs, seed=seed)
    if softmax and precision != "auto":
        recipe = replace(recipe, precision=precision)
    return config, recipe


def _trained_record(
    config: ModelConfig, recipe: TrainConfig, history: TrainResult, seconds: float
) -> ModelUsed:
    last = history.history[history.best_epoch - 1] if history.history else None
    training = {
        "recipe": recipe.to_dict(),
        "epochs_run": len(history.history),
        "best_epoch": history.best_epoch,
        "train_accuracy": None if last is None else last.train_accuracy,
        "val_accuracy": None if last is None else last.val_accuracy,
        "seconds": round(seconds, 2),
    }
    role = "lgm-model" if config.head == "lgm" else "model"
    return ModelUsed(role, "trained", config.arch, config.head, training=training)


def train_default_model(
    data: ImageDataset,
    *,
    head: str = "softmax",
    arch: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    precision: str = "auto",
) -> tuple[Network, ModelUsed]:
    """Train the default model (or ``arch``) on ``data`` with its recipe; returns it and a record.

    ``precision``: "auto", "float32" or "bfloat16" (:func:`default_setup`)."""
    dev = pick_device(device)
    config, recipe = default_setup(
        data, head=head, arch=arch, epochs=epochs, seed=seed, device=dev, precision=precision
    )
    network = build_model(config, seed=seed)
    started = time.perf_counter()
    history = train_model(
        network, data, recipe, device=dev, description=f"training {config.arch} ({head})"
    )
    return network, _trained_record(config, recipe, history, time.perf_counter() - started)


def scan(
    data: ImageDataset | str | PathLike[str],
    *,
    defenses: str | Sequence[str] | None = "all",
    holdout: ImageDataset | str | PathLike[str] | None = None,
    model: Network | Checkpoint | str | PathLike[str] | None = None,
    lgm_model: Network | Checkpoint | str | PathLike[str] | None = None,
    threshold: Threshold | str | None = None,
    classes: Sequence[int] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    arch: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    decision: str = "verdict",
    precision: str = "auto",
) -> ScanResult:
    """Score ``data`` with the selected defenses, judge its classes and decide what to remove.

    Parameters
    ----------
    data : the suspect training set, with its claimed labels (an ImageDataset, or a path or data
        name that :func:`poisonlab.data.load_dataset` loads)
    defenses : "all", a registry name, a comma-separated list or a sequence of names; None: the
        members of the combined decision (:func:`~poisonlab.defenses.fusion.decision_members`,
        what ``poisonlab scan`` runs without ``--defense``)
    holdout : clean held-out data (DeepFeatures, target-FPR thresholds, the verdicts' held-out
        check), as ``data``
    model : a model trained on ``data`` (Network, Checkpoint or a checkpoint folder), checked to fit
        its image shape and classes; None trains the default one
    lgm_model : a model with an LGM head trained on ``data`` (as ``model``; e.g. the ``lgm-model``
        folder of an earlier scan), read by the LGM detectors only; None trains one when an LGM
        detector is selected and ``model`` has no LGM head
    threshold : one threshold for every defense and the combined decision (default: the per-class
        verdicts, each paper's rule for detectors without verdicts; ``paper`` leaves the combined
        decision on the verdicts at α = 0.05, and ``contamination:``, ``fpr:`` and ``value:``
        cut the combined score, a rank percentile in [0, 1])
    classes : classes analysed by per-class defenses (others note that they score all classes)
    params : extra constructor keywords per defense name
    arch, epochs : architecture and epochs of the trained default model(s)
    seed : seeds model initialisation, training and detectors that take a ``seed``
    device, batch_size : where and in what batches representations are computed
    decision : "verdict" (the combined decision, default) or "union" (drop every flag)
    precision : training precision of a trained default softmax model: "auto" (bfloat16 mixed
        precision from 20,000 images on a device that computes it natively, else float32),
        "float32" or "bfloat16"; the LGM model always trains in float32

    Returns
    -------
    ScanResult
        ``verdict`` (one line), ``decision`` (classes named, samples removed), ``outcomes`` (per
        defense its result, or the reason it was skipped), ``models`` and ``clean()``.

    Raises
    ------
    ConfigError or DataError
        Bad names, parameters or inputs, or no selected defense could run.
    """
    started = time.perf_counter()
    if decision not in RULES:
        raise ConfigError(f"decision must be one of {', '.join(RULES)}, got {decision!r}")
    _check_precision(precision)
    data = as_dataset(data, "data")
    holdout = None if holdout is None else as_dataset(holdout, "holdout")
    check_inputs(data, holdout, classes)
    model = as_model(model, data)
    lgm = as_lgm_model(lgm_model, data)
    lgm_net = lgm.model if isinstance(lgm, Checkpoint) else lgm
    names = resolve_defenses(defenses)
    cut = as_threshold(threshold)
    check_threshold(cut, holdout_given=holdout is not None)
    built = build_detectors(names, params=params, threshold=cut, classes=classes, seed=seed)
    given = model.model if isinstance(model, Checkpoint) else model
    outcomes: dict[str, DefenseOutcome] = {}
    detectors: list[Detector] = []
    for detector in built:
        reason = unmet_need(type(detector), holdout=holdout, model=given, lgm_model=lgm_net)
        if reason is not None:
            outcomes[detector.name] = DefenseOutcome(detector.name, skipped=reason)
        else:
            detectors.append(detector)
    check_reference_members(cut, decision, detectors)

    if lgm is not None and not any(d.needs_lgm for d in detectors):
        logger.warning(
            "`lgm_model` is read only by LGM detectors (lgm-likelihood), and none of the "
            "selected defenses that can run is one: it is not used"
        )
        lgm = lgm_net = None

    def network_for(needs_lgm: bool) -> Network:  # untrained, of the architecture to be trained
        if needs_lgm and lgm_net is not None:
            return lgm_net
        if given is not None:
            return given
        config, _ = default_setup(data, head="lgm" if needs_lgm else "softmax", arch=arch)
        return build_model(config, seed=seed)

    check_layers(detectors, network_for)
    # a model will be trained on it: none given for a detector that needs one
    trains = any(d.needs_model and not (d.needs_lgm and lgm is not None) for d in detectors)
    if model is None and trains:
        check_training_data(data)
    else:
        for message in data_warnings(data):
            logger.warning(message)
    dev = pick_device(device)
    models = _prepare_models(
        data,
        detectors,
        holdout,
        model,
        lgm,
        arch=arch,
        epochs=epochs,
        seed=seed,
        device=dev,
        batch_size=batch_size,
        precision=precision,
    )
    # LGM detectors last: their model may still be training beside the others
    ordered_detectors = sorted(detectors, key=lambda d: d.needs_lgm)
    try:
        for detector in progress.track(
            ordered_detectors, "running defenses", label=lambda d: d.name
        ):
            role = "lgm-model" if detector.needs_lgm and models.has("lgm-model") else "model"
            notes: tuple[str, ...] = ()
            if classes is not None and not detector.per_class:
                notes = ("scores every class; `classes` applies to per-class defenses only",)
            try:
                result = detector.fit(models.get(role)).result
            except PoisonlabError as exc:
                outcomes[detector.name] = DefenseOutcome(detector.name, skipped=str(exc))
                continue
            outcomes[detector.name] = DefenseOutcome(detector.name, result, None, role, notes)
    finally:
        models.close()
    ordered = tuple(outcomes[n] for n in names)
    if not any(o.result is not None for o in ordered):
        reasons = "; ".join(f"{o.name}: {o.skipped}" for o in ordered)
        raise ConfigError(f"no defense could run ({reasons})")
    results = [o.result for o in ordered if o.result is not None]
    reference = None
    if cut is not None and cut.needs_reference and decision == "verdict" and holdout is not None:
        fitted = [d for d in detectors if d.name in outcomes and outcomes[d.name].result]
        reference = _combined_reference(fitted, data, holdout)
    combined = combine(results, data.labels, rule=decision, threshold=cut, reference=reference)
    return ScanResult(
        data=data,
        outcomes=ordered,
        models=tuple(models.used),
        threshold=cut.describe() if cut is not None else "verdict",
        holdout=holdout,
        seconds=time.perf_counter() - started,
        settings={
            "seed": seed,
            "classes": None if classes is None else list(classes),
            "threads": runtime.record(),
        },
        networks={role: e.model for role, e in models.evidence.items() if e.model is not None},
        decision=combined,
        selection=selection_record(defenses, names),
    )


def _combined_reference(
    detectors: Sequence[Detector], data: ImageDataset, holdout: ImageDataset
) -> Tensor:
    """Combined scores of the clean held-out samples under the members that can score them."""
    members = [d for d in detectors if d.result.verdicts and d.inductive]
    held = [d.score_samples(holdout) for d in members]
    combined = holdout_combined_score(
        [d.result for d in members], data.labels, held, holdout.labels
    )
    return combined[~torch.isnan(combined)]


class _ScanModels:
    """The model(s) the detectors read, one Evidence per role ("model", "lgm-model"), and the
    record of each; the LGM model may still be training in a child process until first read."""

    def __init__(
        self, evidence_for: Callable[[Network | None, TrainConfig | None], Evidence]
    ) -> None:
        self.used: list[ModelUsed] = []
        self.evidence: dict[str, Evidence] = {}
        self._evidence_for = evidence_for
        self._pending: tuple[BackgroundTraining, ModelConfig, TrainConfig, float] | None = None

    def add(self, role: str, network: Network | None, record: ModelUsed | None = None) -> None:
        """Record a model that is ready (None: no model, for detectors that need none).

        A trained model's Evidence carries its recipe, so a defense that retrains the
        architecture (activation clustering's exclusionary reclassification) trains it alike.
        """
        training = record.training if record is not None else None
        recipe = TrainConfig(**training["recipe"]) if training else None
        self.evidence[role] = self._evidence_for(network, recipe)
        if record is not None:
            self.used.append(record)

    def train_in_background(
        self, job: BackgroundTraining, config: ModelConfig, recipe: TrainConfig
    ) -> None:
        """The LGM model is being trained by ``job``; :meth:`get` collects it when first asked."""
        self._pending = (job, config, recipe, time.perf_counter())

    def has(self, role: str) -> bool:
        """Whether a model of ``role`` is there or on its way."""
        return role in self.evidence or (role == "lgm-model" and self._pending is not None)

    def get(self, role: str) -> Evidence:
        """The Evidence of ``role``, waiting for a model still in training."""
        if role not in self.evidence and role == "lgm-model" and self._pending is not None:
            job, config, recipe, started = self._pending
            self._pending = None
            with job:
                network, history = job.result()
            # the child's own training time (its start-up excluded), as for an in-process model
            seconds = sum(r.seconds for r in history.history)
            logger.debug("%s came back %.1f s after it started", job.description,
                         time.perf_counter() - started)  # fmt: skip
            self.add(role, network, _trained_record(config, recipe, history, seconds))
        return self.evidence[role]

    def close(self) -> None:
        """Stop a training that is no longer wanted (an error before its model was read)."""
        if self._pending is not None:
            self._pending[0].cancel()
            self._pending = None


def _prepare_models(
    data: ImageDataset,
    detectors: Sequence[Detector],
    holdout: ImageDataset | None,
    model: Network | Checkpoint | None,
    lgm_model: Network | Checkpoint | None = None,
    *,
    arch: str | None,
    epochs: int | None,
    seed: int,
    device: torch.device,
    batch_size: int,
    precision: str = "auto",
) -> _ScanModels:
    """The model(s) the detectors need: the one(s) given, or the default one(s) trained on ``data``.

    ``lgm_model`` (given only when an LGM detector runs) serves the LGM detectors as "lgm-model".

    When both a softmax and an LGM model are trained on the CPU and a core is free, the LGM model
    trains in a child process (:mod:`poisonlab.train.background`) while this one trains the
    softmax model and runs the other detectors: the same weights, in less wall time.
    """

    def evidence_for(network: Network | None, recipe: TrainConfig | None) -> Evidence:
        return Evidence(
            data,
            network,
            holdout=holdout,
            device=device,
            batch_size=batch_size,
            recipe=recipe,
            retrain_epochs=scan_retrain_epochs(len(data), epochs),
            retrain_images=scan_retrain_images(len(data), epochs),
        )

    models = _ScanModels(evidence_for)

    def borrow(role: str, given: Network | Checkpoint) -> None:
        # borrowed: the Evidence neither moves it nor changes its modes
        network = given.model if isinstance(given, Checkpoint) else given
        path = str(given.path) if isinstance(given, Checkpoint) and given.path else None
        head = "lgm" if network.is_lgm else "softmax"
        source = "checkpoint" if path else "given"
        models.add(role, network, ModelUsed(role, source, network.config.arch, head, path))

    if model is not None:
        borrow("model", model)
        if lgm_model is not None:
            borrow("lgm-model", lgm_model)
        return models
    softmax = any(d.needs_model and not d.needs_lgm for d in detectors)
    train_lgm = lgm_model is None and any(d.needs_lgm for d in detectors)
    if train_lgm:
        config, recipe = default_setup(data, head="lgm", arch=arch, epochs=epochs, seed=seed)
        threads = torch.get_num_threads()
        others = any(not d.needs_lgm for d in detectors)  # work to overlap with
        if device.type == "cpu" and others and worth_it(len(data), recipe.epochs, threads):
            logger.info("training %s (lgm) in a child process beside the other work", config.arch)
            job = BackgroundTraining(config, data, recipe, seed=seed, threads=threads)
            models.train_in_background(job, config, recipe)
    try:
        if softmax:
            network, record = train_default_model(
                data, arch=arch, epochs=epochs, seed=seed, device=device, precision=precision
            )
            models.add("model", network, record)
        else:
            models.add("model", None)
        if lgm_model is not None:
            borrow("lgm-model", lgm_model)
        elif train_lgm and not models.has("lgm-model"):
            network, record = train_default_model(
                data, head="lgm", arch=arch, epochs=epochs, seed=seed, device=device
            )
            models.add("lgm-model", network, record)
    except BaseException:
        models.close()
        raise
    return models
