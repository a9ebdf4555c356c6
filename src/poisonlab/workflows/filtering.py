"""Yaseen et al. 2020's full defence loop: filter the fine-tuning set, fine-tune, and re-measure the
attack.

Yaseen, Aadil, Sargsyan, "Preventing Clean Label Poisoning using Gaussian Mixture Loss", Algorithm
1: a model F_LGM is pre-trained (on D_C) with the L-GM loss; the victim downloads a fine-tuning
set D_t = D_f ∪ D_p that contains poisons, keeps D_w = {(x, y) : p(F_LGM(x) | y) > T}, and
fine-tunes on D_w. :func:`filter_and_finetune` runs this on a :class:`PoisonedDataset` (which
carries the ground truth) and measures the attack three times from the same pre-trained weights:
before fine-tuning, after fine-tuning on all of D_t (no defence) and after fine-tuning on D_w.

Attack success is the attack's own measure (docs/methods.md#metrics): for feature collision the
fraction of targets predicted as their base class; for backdoors the accuracy on the triggered test
set labelled with the attacker's classes (the ASR).

Three ways to fine-tune (``finetune``): every weight (``"all"``), the head only (``"head"``), or,
for feature collision, Poison Frogs' one-shot kill (``"head-per-target"``, Shafahi et al. 2018,
arXiv:1804.00792): for each target the head alone is retrained on frozen features of the clean rows
plus that target's own poisons, so the targets do not interfere and a target whose poison was
filtered out is retrained on clean data only
(:func:`~poisonlab.workflows.collision_eval.evaluate_transfer` with the filter's ``keep`` mask).

The model that scores the set (``scorer``) may differ from the one fine-tuned: in Yaseen et al.
2020's Algorithm 1 the victim downloads F_LGM to filter D_t and then fine-tunes "his model f′(x)",
which can be, e.g., a cross-entropy network the poisons were crafted against.

Detection quality (AUROC, ROC points) is computed with poison as the positive class over D_t:
"clean" means the clean part of the filtered set itself, D_f (the paper's text; its ROC code used
the 60k MNIST training set instead, docs/methods.md#filter-and-fine-tune-loop).

The caller's model is never altered: every step works on deep copies, and the pre-trained
weights are restored for each fine-tuning run. Any registered detector can replace the LGM
likelihood filter (``detector=``), e.g. DeepFeatures with a clean held-out set.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poisonlab.attacks.base import PoisonedDataset
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses.base import DetectionResult, Detector
from poisonlab.defenses.evidence import Evidence
from poisonlab.defenses.lgm_likelihood import LGMLikelihood
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError, DataError
from poisonlab.metrics.detection import DetectionMetrics, evaluate_detection
from poisonlab.models.network import Network
from poisonlab.train import TrainConfig, evaluate, predict, train_model
from poisonlab.workflows.collision_eval import TransferConfig, evaluate_transfer

FINETUNE = ("all", "head", "head-per-target")


@dataclass(frozen=True, eq=False)
class FilterReport:
    """What filtering and fine-tuning did to one poisoned fine-tuning set.

    detection : the detector's scores and flags on D_t, computed with the pre-trained model
    metrics : detection metrics against the ground truth (poison = positive; clean = D_f), with
        the ROC points in ``metrics.roc`` (:meth:`clean_positive_roc` gives Yaseen et al.'s view)
    kept : bool (N,), the filtered set D_w
    success_before, success_without_filter, success_with_filter : attack success (fraction)
    clean_accuracy_* : accuracy on ``test`` at the same three points (None without ``test``)
    """

    detection: DetectionResult
    metrics: DetectionMetrics
    kept: Tensor
    n_poison: int
    n_poison_removed: int
    n_clean_removed: int
    success_measure: str
    success_before: float
    success_without_filter: float
    success_with_filter: float
    clean_accuracy_before: float | None
    clean_accuracy_without_filter: float | None
    clean_accuracy_with_filter: float | None
    finetune: str
    train_config: dict[str, Any]
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def clean_positive_roc(self) -> tuple[np.ndarray, np.ndarray]:
        """Yaseen et al. 2020's ROC: clean is positive and scored by the likelihood p(f | y).

        Returns (false-positive rate, true-positive rate) over the same cuts as ``metrics.roc``
        (poison positive, scored by −log p): a cut keeps clean samples at rate 1 − FPR and
        poisons at rate 1 − TPR there. Clean = the clean part of the filtered set.
        """
        roc = self.metrics.roc
        return (1.0 - roc.tpr)[::-1].copy(), (1.0 - roc.fpr)[::-1].copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (scores and ROC points left out; see ``metrics.to_dict()``)."""
        return {
            "detector": self.detection.detector,
            "threshold": self.detection.threshold,
            "auroc": self.metrics.auroc,
            "tpr": self.metrics.tpr,
            "tnr": self.metrics.tnr,
            "n": len(self.kept),
            "n_kept": int(self.kept.sum()),
            "n_poison": self.n_poison,
            "n_poison_removed": self.n_poison_removed,
            "n_clean_removed": self.n_clean_removed,
            "success_measure": self.success_measure,
            "success_before": self.success_before,
            "success_without_filter": self.success_without_filter,
            "success_with_filter": self.success_with_filter,
            "clean_accuracy_before": self.clean_accuracy_before,
            "clean_accuracy_without_filter": self.clean_accuracy_without_filter,
            "clean_accuracy_with_filter": self.clean_accuracy_with_filter,
            "finetune": self.finetune,
            "train_config": self.train_config,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def attack_success(
    model: Network, poisoned: PoisonedDataset, *, device: torch.device | str | None = None
) -> tuple[float, str]:
    """(success rate, what was measured) of ``poisoned``'s attack against ``model``.

    Feature collision: the fraction of ``targets`` predicted as ``target_labels``. Backdoors: the
    fraction of ``test_set`` (triggered inputs with the attacker's labels) predicted as labelled.
    """
    if poisoned.targets is not None and poisoned.target_labels is not None:
        predicted = predict(model, poisoned.targets.images, device=device)
        hits = predicted == poisoned.target_labels.to(predicted.device)
        return float(hits.double().mean()), "targets predicted as their base class"
    if poisoned.test_set is not None:
        return evaluate(model, poisoned.test_set, device=device).accuracy, "attack success rate"
    raise DataError(
        f"the {poisoned.attack!r} poisoned set has neither targets nor a triggered test set, "
        "so its attack success cannot be measured (give the attack's poison() a test= set; a "
        "poisoned.npz written before poisonlab saved them holds neither: run the attack again)"
    )


def default_finetune_config(seed: int = 0) -> TrainConfig:
    """Fine-tuning from pre-trained weights: 5 epochs of Adam at 1e-4 over all of the data.

    No validation split (it would drop poisons from training and select the epoch on poisoned
    data) and no early stopping; the paper does not state its fine-tuning schedule.
    """
    return TrainConfig(epochs=5, lr=1e-4, val_fraction=0.0, patience=None, seed=seed)


def _finetuned(
    model: Network,
    data: ImageDataset,
    config: TrainConfig,
    finetune: str,
    device: torch.device,
    description: str,
) -> Network:
    """A fine-tuned deep copy of ``model`` (all weights, or only the head's)."""
    copied = copy.deepcopy(model)
    trainable = list(copied.head.parameters()) if finetune == "head" else None
    train_model(copied, data, config, device=device, trainable=trainable, description=description)
    return copied


def _one_shot(
    model: Network,
    poisoned: PoisonedDataset,
    kept: Tensor,
    config: TrainConfig,
    test: ImageDataset | None,
) -> list[tuple[float, float | None]]:
    """(success, mean clean accuracy) of Poison Frogs' per-target head retraining on all of D_t
    and on the kept rows, warm-started from the pre-trained head, frozen features."""
    if poisoned.targets is None:
        raise ConfigError("finetune='head-per-target' needs a feature-collision poisoned set")
    transfer = TransferConfig.warm_per_target(config)
    out: list[tuple[float, float | None]] = []
    for keep in (None, kept):
        evaluation = evaluate_transfer(model, poisoned, config=transfer, clean_test=test, keep=keep)
        accuracy = evaluation.clean_accuracy
        out.append((evaluation.rate.rate, None if accuracy is None else float(accuracy.mean())))
    return out


def filter_and_finetune(
    model: Network,
    poisoned: PoisonedDataset,
    *,
    detector: Detector | None = None,
    scorer: Network | None = None,
    holdout: ImageDataset | None = None,
    test: ImageDataset | None = None,
    finetune: str = "all",
    train_config: TrainConfig | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> FilterReport:
    """Filter ``poisoned.dataset`` with ``detector`` (reading ``scorer``, default ``model``),
    fine-tune ``model`` on what is kept, and re-measure the attack.

    Parameters
    ----------
    model : Network
        The pre-trained model (F_LGM for the default detector). Left unchanged.
    poisoned : PoisonedDataset
        The fine-tuning set D_t with its ground truth and the attack's targets or test set.
    detector : Detector or None
        Default: :class:`LGMLikelihood` with its χ² rule (p < 0.001).
    scorer : Network or None
        The model whose outputs the detector reads (F_LGM for the default detector); None uses
        ``model``. Left unchanged.
    holdout : ImageDataset or None
        Clean held-out data for detectors that need it (and for target-FPR thresholds).
    test : ImageDataset or None
        Clean test data; when given, clean accuracy is reported beside attack success.
    finetune : {"all", "head", "head-per-target"}
        Fine-tune every weight, only the head, or only the head once per target on frozen
        features (Poison Frogs' one-shot kill; feature-collision sets only, warm start from the
        pre-trained head; clean accuracies are then means over the targets' heads).
    train_config : TrainConfig or None
        Default :func:`default_finetune_config` with ``seed``; for ``head-per-target`` its
        ``epochs``, ``batch_size``, ``lr`` and ``seed`` drive the head retraining (Adam).
    device : where to compute (default: CUDA when present)
    seed : int

    Returns
    -------
    FilterReport

    Raises
    ------
    ConfigError
        Bad ``finetune``, or filtering removed every sample.
    """
    if finetune not in FINETUNE:
        raise ConfigError(f"finetune must be one of {', '.join(FINETUNE)}, got {finetune!r}")
    started = time.perf_counter()
    dev = pick_device(device)
    config = train_config or default_finetune_config(seed)
    detector = detector or LGMLikelihood()
    pretrained = copy.deepcopy(model)
    data = poisoned.dataset
    judge = copy.deepcopy(scorer if scorer is not None else pretrained)
    evidence = Evidence(data, judge, holdout=holdout, device=dev)
    result = detector.fit(evidence).result
    metrics = evaluate_detection(result, poisoned.is_poison)
    kept = ~result.flagged
    if not bool(kept.any()):
        raise ConfigError(f"{result.detector} flagged every sample; nothing is left to fine-tune")
    success_before, measure = attack_success(pretrained, poisoned, device=dev)
    accuracies: list[float | None] = [None, None, None]
    if test is not None:
        accuracies[0] = evaluate(pretrained, test, device=dev).accuracy
    if finetune == "head-per-target":
        outcomes = _one_shot(pretrained, poisoned, kept, config, test)
        success_without, success_with = outcomes[0][0], outcomes[1][0]
        if test is not None:
            accuracies[1:] = [outcomes[0][1], outcomes[1][1]]
    else:
        without = _finetuned(pretrained, data, config, finetune, dev, "fine-tuning on all data")
        with_filter = _finetuned(
            pretrained, data.subset(kept), config, finetune, dev, "fine-tuning on kept data"
        )
        success_without = attack_success(without, poisoned, device=dev)[0]
        success_with = attack_success(with_filter, poisoned, device=dev)[0]
        if test is not None:
            accuracies[1:] = [
                evaluate(m, test, device=dev).accuracy for m in (without, with_filter)
            ]
    poison = poisoned.is_poison
    notes = []
    if int(poison.sum()) == 0:
        notes.append("the data set holds no poisons")
    return FilterReport(
        detection=result,
        metrics=metrics,
        kept=kept,
        n_poison=int(poison.sum()),
        n_poison_removed=int((poison & ~kept).sum()),
        n_clean_removed=int((~poison & ~kept).sum()),
        success_measure=measure,
        success_before=success_before,
        success_without_filter=success_without,
        success_with_filter=success_with,
        clean_accuracy_before=accuracies[0],
        clean_accuracy_without_filter=accuracies[1],
        clean_accuracy_with_filter=accuracies[2],
        finetune=finetune,
        train_config=config.to_dict(),
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
    )
