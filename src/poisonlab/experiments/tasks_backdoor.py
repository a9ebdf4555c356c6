"""Task ``backdoor``: a trigger backdoor against one model, then every listed defense (seeds 002,
004).

One cell, in order:

1. the data split (:class:`~poisonlab.experiments.tasks_common.DataSpec`);
2. the **clean model** (cached), for ``model.clean_accuracy`` and as the label-consistent attack's
   surrogate (Schulth et al. 2022: "the same architecture and training recipe, on clean data");
3. the **attack** ``[attack] name`` (``badnets``, ``label-consistent``) with its keyword
   parameters, seeded by ``derive_seed(seed, "attack")``. A zero budget (``rate``, ``target_rate``
   or ``count`` = 0: the 0% column of Subedar et al. 2019 Table 1) is a clean cell: nothing is
   poisoned, the
   victim is the clean model, and the trigger is still applied to the test set;
4. the **victim** trained on the poisoned set (cached under the data, the attack's resolved
   parameters and seed, the model config and the recipe);
5. attack metrics on the clean test split and its triggered copy (full-amplitude triggers);
6. one :class:`~poisonlab.defenses.Evidence` (the poisoned training set, the victim, the clean
   held-out split) shared by every ``[[defenses]]`` entry, each scored with
   :func:`~poisonlab.metrics.detection.evaluate_detection` over the samples it analysed (Schulth et
   al. 2022:
   give a defense ``classes = [target]`` for rates over the target class only);
7. with ``[task] table1 = true``, Subedar et al. 2019's Table 1 and its held-out-set detection
(below);
8. artifacts in ``cell_dir``: ``scores.npz``, ``examples.npz`` and, when a defense exposes its
   most suspicious relevance maps (``extras["top_heatmaps"]``, Heatmap Clustering),
   ``heatmaps.npz``.

Metrics (tasks_base naming): ``attack.clean_accuracy``, ``attack.asr`` (the triggered test set
predicted as the attacker's labels), ``attack.masr`` (Schulth et al. 2022 §5.1, when the attack has
one target), ``attack.n_poison``, ``attack.n_train``, ``model.clean_accuracy`` and ``model.asr``
(the clean model: the control), ``defense.<name>.<metric>`` (over the poisoned **training** set,
positive = poison; also ``n_poison``, the poisons among the analysed samples).

Subedar et al. 2019 (``table1``): ``accuracy.<model>.<set>`` for model ∈ {dnn, df, bnn} and set ∈
{clean, triggered} — the victim's accuracy, DeepFeatures' maximum-likelihood classification
(``DeepFeaturesModel.classify`` with the densities the ``deep-features`` defense fitted on half of
the held-out split), and the BNN's MC-averaged prediction (``backdoor_accuracy``); "triggered" is
the fraction predicted as the backdoor label (y+1) mod K. Subedar et al. 2019 also scores D_val^BD
against clean validation data; ``val.<model>.auroc``, ``val.<model>.aupr`` and
``val.<model>.aupr_in`` give that protocol: the clean test split (claimed = true labels) against its
triggered copy (claimed = backdoor labels), scored by the victim's softmax entropy (dnn; or the
listed ``dnn-uncertainty``'s score), DeepFeatures' fused score (df) and BALD (bnn; or the listed
``bnn``'s score), with ``val.n_clean`` and ``val.n_triggered``. The ``defense.*`` numbers score the
poisoned training set instead (the ``D_train^BD`` protocol).

``[task]`` options: ``clean_model`` (default true), ``victim`` (default true; false runs only
model-free defenses such as raw-pixel clustering, without attack metrics), ``table1`` (false),
``examples`` (8 poisons and triggered test images in examples.npz), ``batch_size`` (256, for
representations). How many heatmaps reach heatmaps.npz is the defense's own ``top_heatmaps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poisonlab.attacks import PoisonedDataset, build_attack
from poisonlab.attacks.badnets import BackdoorAttack
from poisonlab.data.dataset import ImageDataset, concatenate
from poisonlab.defenses import DetectionResult, Detector, Evidence, build_detector
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError
from poisonlab.experiments.tasks_base import (
    CellSpec,
    TaskContext,
    register_plan,
    register_task,
    stable_hash,
)
from poisonlab.experiments.tasks_common import (
    DataSpec,
    as_array,
    attack_error,
    build_detectors,
    cached_model,
    check_keys,
    detection_metrics,
    heatmap_arrays,
    load_split,
    model_config,
    scores_arrays,
    task_option,
    train_recipe,
    write_npz,
)
from poisonlab.metrics.attack import attack_success_rate, clean_accuracy
from poisonlab.metrics.detection import detection_metrics as rank_metrics
from poisonlab.metrics.detection import evaluate_detection
from poisonlab.metrics.uncertainty import backdoor_accuracy
from poisonlab.seeding import derive_seed, make_generator
from poisonlab.train import predict
from poisonlab.validation import NON_NEGATIVE_INT, POSITIVE_INT, Boolean, ParameterError
from poisonlab.workflows.backdoor_eval import measure_backdoor

TASK_KEYS = ("clean_model", "victim", "table1", "examples", "batch_size")
BUDGET_KEYS = ("rate", "target_rate", "count")
SURROGATE_ATTACKS = ("label-consistent",)
"""Attacks that take the clean model as their surrogate (``poison(model=...)``)."""


@dataclass(frozen=True, eq=False)
class BackdoorPlan:
    """A backdoor cell's parameters, validated without loading data or training anything.

    ``attack`` is built with every budget key except a zero one (``zero`` names it), so it always
    provides the trigger and the triggered test set.
    """

    data: DataSpec
    attack_name: str
    attack: BackdoorAttack
    zero: tuple[str, ...]
    detectors: tuple[Detector, ...]
    clean_model: bool
    victim: bool
    table1: bool
    examples: int
    batch_size: int

    def check_image_shape(self, shape: tuple[int, int, int]) -> None:
        """Raise the ``[attack]`` ConfigError a run gives when the trigger (its size, position,
        offset or window) cannot be placed on (C, H, W) images."""
        try:
            self.attack.trigger_spec.check_fits(shape)
        except ConfigError as exc:
            raise attack_error(exc, self.attack_name) from None


@register_plan("backdoor")
def plan_backdoor(cell: CellSpec) -> BackdoorPlan:
    """Validate a ``backdoor`` cell (keys, types, the attack and the detectors) and plan it.

    Raises
    ------
    ConfigError
        Naming the bad key or value.
    """
    task = cell.section("task")
    check_keys(task, TASK_KEYS, "task")
    attack_params = cell.section("attack")
    name = attack_params.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError("[attack] needs name = a backdoor attack (badnets, label-consistent)")
    zero = tuple(k for k in BUDGET_KEYS if attack_params.get(k) == 0)
    plan = BackdoorPlan(
        data=DataSpec.from_section(cell.section("data")),
        attack_name=name,
        attack=_attack(name, {k: v for k, v in attack_params.items() if k not in zero}),
        zero=zero,
        detectors=tuple(build_detectors(list(cell.params.get("defenses") or []), seed=cell.seed)),
        clean_model=task_option(task, "clean_model", True, [Boolean()]),
        victim=task_option(task, "victim", True, [Boolean()]),
        table1=task_option(task, "table1", False, [Boolean()]),
        examples=task_option(task, "examples", 8, [NON_NEGATIVE_INT]),
        batch_size=task_option(task, "batch_size", 256, [POSITIVE_INT]),
    )
    if plan.table1 and not plan.victim:
        raise ConfigError("[task] table1 needs the victim model (victim = true)")
    return plan


@register_task("backdoor")
def run_backdoor(cell: CellSpec, context: TaskContext) -> dict[str, float | int]:
    """Run one backdoor cell (module docstring) and return its flat metrics."""
    plan = plan_backdoor(cell)
    name, attack, spec = plan.attack_name, plan.attack, plan.data
    device = pick_device(context.device)
    split = load_split(spec)
    plan.check_image_shape(split.train.shape)  # before any model trains (a dry run checks it too)
    config = model_config(cell.section("model"), split.train, default_arch="cnn-small")
    train_section = cell.section("train")
    surrogate_needed = name in SURROGATE_ATTACKS

    metrics: dict[str, float | int] = {}
    clean = None
    clean_extra: dict[str, Any] = {}
    if plan.clean_model or surrogate_needed or plan.zero:
        recipe = train_recipe(train_section, config.arch, len(split.train), cell.seed)
        clean, clean_extra = cached_model(
            context,
            what="clean model",
            data_key=spec.key(),
            trained_on={"clean": "train"},
            config=config,
            recipe=recipe,
            data=split.train,
            device=device,
        )
    attack_seed = derive_seed(cell.seed, "attack")
    if plan.zero:
        context.log(f"{plan.zero[0]} = 0: a clean cell (no poisons; the victim is the clean model)")
        poisoned = _clean_cell(split.train, split.test, attack, attack_seed)
    else:
        context.log(f"poisoning {len(split.train)} training images with {name}")
        poisoned = attack.poison(
            split.train,
            generator=make_generator(attack_seed),
            model=clean if surrogate_needed else None,
            test=split.test,
        )
    triggered = poisoned.test_set
    assert triggered is not None  # every BackdoorAttack builds it when given the test split
    metrics["attack.n_poison"] = poisoned.n_poison
    metrics["attack.n_train"] = len(poisoned.dataset)

    victim = None
    if plan.victim and plan.zero:
        victim = clean
    elif plan.victim:
        trained_on = {"attack": name, "params": poisoned.params, "seed": attack_seed}
        if surrogate_needed:
            trained_on["surrogate"] = stable_hash(clean_extra.get("key"))
        recipe = train_recipe(train_section, config.arch, len(poisoned.dataset), cell.seed)
        victim, _ = cached_model(
            context,
            what="victim",
            data_key=spec.key(),
            trained_on=trained_on,
            config=config,
            recipe=recipe,
            data=poisoned.dataset,
            device=device,
        )
    if victim is not None:
        metrics |= _attack_metrics(attack, victim, split.test, triggered, cell.seed, device)
    if clean is not None:
        metrics["model.clean_accuracy"] = clean_accuracy(
            predict(clean, split.test.images, device=device), split.test
        )
        metrics["model.asr"] = attack_success_rate(
            predict(clean, triggered.images, device=device), triggered
        )

    evidence = Evidence(
        poisoned.dataset, victim, holdout=split.holdout, device=device, batch_size=plan.batch_size
    )
    results: dict[str, DetectionResult] = {}
    for detector in plan.detectors:
        context.log(f"running {detector.name} on {len(poisoned.dataset)} training samples")
        result = detector.fit(evidence).result
        results[detector.name] = result
        scored = evaluate_detection(result, poisoned.is_poison)
        metrics |= detection_metrics(detector.name, scored, result)

    arrays = scores_arrays(poisoned.is_poison, poisoned.dataset.labels, results)
    arrays["original_labels"] = as_array(poisoned.original_labels)
    if plan.table1:
        assert victim is not None
        context.log(
            "Subedar et al. 2019 Table 1: DNN / DF / BNN on the clean and triggered test split"
        )
        table, val_arrays = _seed002(
            victim, evidence, list(plan.detectors), split.test, triggered, cell.seed, device
        )
        metrics |= table
        arrays |= val_arrays
    write_npz(context.cell_dir, "scores.npz", arrays)
    write_npz(context.cell_dir, "examples.npz", _examples(poisoned, split.train, plan.examples))
    heatmaps = heatmap_arrays(poisoned.dataset, poisoned.is_poison, results)
    if heatmaps:
        write_npz(context.cell_dir, "heatmaps.npz", heatmaps)
    return metrics


def _attack(name: str, params: dict[str, Any]) -> BackdoorAttack:
    """The trigger attack ``name`` with ``params``; ConfigError for others or bad keywords."""
    try:
        attack = build_attack(name, **params)
    except ParameterError:
        raise  # names the attack, the parameter and its range already
    except ConfigError as exc:
        raise attack_error(exc, name) from None
    if not isinstance(attack, BackdoorAttack):
        raise ConfigError(f"the backdoor task needs a trigger attack, not {name!r}")
    return attack


def _clean_cell(
    train: ImageDataset, test: ImageDataset, attack: BackdoorAttack, seed: int
) -> PoisonedDataset:
    """The training set without poisons, carrying the attack's triggered test set."""
    triggered = attack.test_set(test, generator=make_generator(derive_seed(seed, "test"))).data
    n = len(train)
    return PoisonedDataset(
        dataset=train,
        is_poison=torch.zeros(n, dtype=torch.bool),
        original_labels=train.labels.clone(),
        source_index=torch.arange(n),
        source_ids=train.ids.copy(),
        attack=attack.name,
        params={**attack.params(), "budget": 0},
        test_set=triggered,
    )


def _attack_metrics(
    attack: BackdoorAttack,
    victim: torch.nn.Module,
    test: ImageDataset,
    triggered: ImageDataset,
    seed: int,
    device: torch.device,
) -> dict[str, float | int]:
    """Clean accuracy, ASR and (with a single target) MASR of the victim."""
    masr_set = None
    if attack.target is not None:
        masr_set = attack.masr_set(test, generator=make_generator(derive_seed(seed, "masr")))
    result = measure_backdoor(
        victim,
        test,
        triggered,
        masr_set=masr_set.data if masr_set is not None else None,
        masr_source_labels=masr_set.source_labels if masr_set is not None else None,
        target=attack.target,
        device=device,
    )
    metrics: dict[str, float | int] = {
        "attack.clean_accuracy": result.clean_accuracy,
        "attack.asr": result.asr,
    }
    if result.masr is not None:
        metrics["attack.masr"] = result.masr
    return metrics


def _listed(detectors: list[Detector], name: str, evidence: Evidence, seed: int) -> Detector:
    """The listed detector called ``name`` (already fitted), or a default one fitted now."""
    for detector in detectors:
        if detector.name == name:
            return detector
    return build_detector(name, seed=seed).fit(evidence)


def _seed002(
    victim: Any,
    evidence: Evidence,
    detectors: list[Detector],
    test: ImageDataset,
    triggered: ImageDataset,
    seed: int,
    device: torch.device,
) -> tuple[dict[str, float | int], dict[str, np.ndarray]]:
    """Subedar et al. 2019's Table 1 accuracies and the held-out (D_val) detection protocol.

    The validation images are scored by the fitted detectors' public inductive API
    (:meth:`~poisonlab.defenses.base.Detector.score_samples`, DeepFeatures' ``predict`` and the
    BNN's ``predict_mc``), never by refitting them on the validation set.
    """
    both = concatenate([test, triggered])
    is_triggered = torch.cat(
        [torch.zeros(len(test), dtype=torch.bool), torch.ones(len(triggered), dtype=torch.bool)]
    )
    n_clean = len(test)
    out: dict[str, float | int] = {"val.n_clean": n_clean, "val.n_triggered": len(triggered)}
    scores: dict[str, Tensor] = {}
    val = Evidence(both, victim, device=device, batch_size=evidence.batch_size)

    dnn: Any = _listed(detectors, "dnn-uncertainty", evidence, seed)
    hits = dnn.probabilities(val).argmax(1) == both.labels
    out["accuracy.dnn.clean"] = float(hits[:n_clean].double().mean())
    out["accuracy.dnn.triggered"] = float(hits[n_clean:].double().mean())
    scores["dnn"] = dnn.score_samples(val)

    df: Any = _listed(detectors, "deep-features", evidence, seed)
    hits = df.predict(val) == both.labels
    out["accuracy.df.clean"] = float(hits[:n_clean].double().mean())
    out["accuracy.df.triggered"] = float(hits[n_clean:].double().mean())
    scores["df"] = df.score_samples(val)

    bnn: Any = _listed(detectors, "bnn", evidence, seed)
    mc = bnn.predict_mc(both, stream="seed002-val", batch_size=evidence.batch_size)
    accuracy = backdoor_accuracy(
        predict(victim, test.images, batch_size=512),
        predict(victim, triggered.images, batch_size=512),
        test,
        triggered,
        mc[:, :n_clean],
        mc[:, n_clean:],
    )
    out["accuracy.bnn.clean"] = accuracy.bnn_clean
    out["accuracy.bnn.triggered"] = accuracy.bnn_triggered
    scores["bnn"] = bnn.scores_of(mc)

    arrays: dict[str, np.ndarray] = {"val_is_triggered": as_array(is_triggered)}
    for model, score in scores.items():
        ranked = rank_metrics(is_triggered, score, torch.zeros(len(score), dtype=torch.bool))
        out[f"val.{model}.auroc"] = ranked.auroc
        out[f"val.{model}.aupr"] = ranked.aupr
        out[f"val.{model}.aupr_in"] = ranked.aupr_in
        arrays[f"val_score__{model}"] = as_array(score.double())
    return out, arrays


def _examples(poisoned: PoisonedDataset, train: ImageDataset, n: int) -> dict[str, Any]:
    """The first ``n`` poisons beside their clean source images, and triggered test images."""
    rows = poisoned.is_poison.nonzero().flatten()[:n]
    sources = poisoned.source_index[rows]
    triggered = poisoned.test_set
    assert triggered is not None
    return {
        "poison": poisoned.dataset.images[rows],
        "poison_labels": poisoned.dataset.labels[rows],
        "clean": train.images[sources],
        "clean_labels": train.labels[sources],
        "triggered": triggered.images[:n],
        "triggered_labels": triggered.labels[:n],
    }
