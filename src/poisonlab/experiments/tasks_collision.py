"""Task ``feature-collision``: Yaseen et al. 2020's CE-vs-LGM experiment with the likelihood filter.

Yaseen, Aadil, Sargsyan, "Preventing Clean Label Poisoning using Gaussian Mixture Loss" (Yaseen et
al. 2020; docs/methods.md#lgm-paper-variant): a model pre-trained on D_C is fine-tuned by its victim
on D_t = D_f ∪ D_p, where D_p are feature-collision poisons (Poison Frogs) crafted on D_f. The
defence pre-trains with the LGM loss and keeps only the pairs (x, y) of D_t whose claimed-class
likelihood p(f(x) | y) is high enough (:class:`~poisonlab.defenses.lgm_likelihood.LGMLikelihood`).

One cell, in order:

1. the split: D_C = the training part, D_f = the test part (Yaseen et al. 2020: the MNIST train and
test
   sets), the held-out part measures clean accuracy;
2. a **CE** and an **LGM** model of the same architecture (``[model] arch``, default ``lgm-net``,
   Yaseen et al. 2020's network with 2-d features), trained on D_C through the cache;
3. the poisons, crafted on D_f with the **same (target, base) pairs** against both models:
   Yaseen et al. 2020's settings (:data:`~poisonlab.workflows.lgm_paper_collision.SEED000_SETTINGS`:
   100
   poisons, β0 = 0.0083, 1000 iterations...) with any ``[attack]`` keyword of
   :class:`~poisonlab.attacks.feature_collision.FeatureCollision` overriding them, or only the
   ``[attack]`` keywords with ``[task] preset = "none"``. Yaseen et al. 2020 draws the targets from
   D_f
   itself, so each target stays in D_t with its true label (``[task] drop_targets = true``
   removes them from the fine-tuning set);
4. attack success = the fraction of targets predicted as their base class, after the victim
   fine-tunes the pre-trained model on D_t (``[task] protocol``: ``transfer`` = the head only,
   ``end-to-end`` = every weight, ``one-shot`` = Poison Frogs' one-shot kill, the head retrained
   once per target on frozen features with only that target's poisons, warm-started;
   :func:`~poisonlab.workflows.filter_and_finetune` with its
   default schedule, 5 epochs of Adam at 1e-4, overridable by ``finetune_epochs``,
   ``finetune_lr``, ``finetune_batch_size``), for the CE model without a filter and for the LGM
   model without and with each ``[[defenses]]`` filter (default: ``lgm-likelihood``), and with
   ``[task] filter_ce = true`` also for the CE model with the filter reading the LGM model (Yaseen
   et al.'s Algorithm 1 lets the victim filter with F_LGM and fine-tune another model f′);
5. optionally (``[task] oneshot = true``) Poison Frogs' own one-shot-kill protocol
   (:func:`~poisonlab.workflows.collision_eval.evaluate_transfer`: a cold head retrained per target
   for 100 epochs on frozen features) for both models, without a filter.

Metrics: ``attack.success_rate`` (CE model, no filter), ``attack.n_poison``, ``attack.n_train``
(|D_t|); ``collision.<m>.success_before`` (the pre-trained model), ``collision.<m>.success_rate``
(after fine-tuning on D_t, no filter), ``collision.<m>.oneshot_success_rate``,
``collision.<m>.l2_mean`` / ``l2_median`` / ``l2_mean_255`` / ``linf_mean`` (‖p − b‖ on the [0, 1]
scale, and ×255), ``collision.<m>.ratio_median`` (‖f(p) − f(t)‖ / ‖f(b) − f(t)‖),
``collision.<m>.iterations_mean`` and ``model.<m>.clean_accuracy`` (pre-trained, held-out part), for
m ∈ {ce, lgm}; ``collision.lgm_larger_fraction`` (pairs whose LGM poison is larger);
``defense.<name>.<metric>`` over D_t (positive = poison, **clean = D_f**, the paper's text), with
``defense.<name>.success_with_filter``, ``clean_accuracy_with_filter``, ``n_poison_removed``,
``n_clean_removed``, and ``defense.<name>.ce.<metric>`` the same for the CE model's set
(``filter_ce``), and ``defense.<name>.auroc_train_clean`` (the same detector refitted on D_C ∪
poisons, **clean = D_C**, what Yaseen et al. 2020's ROC code used; ``[task] auroc_on_train``).

Artifacts: ``features.npz`` (the LGM model's features of D_t with ``labels``, ``is_poison``,
the class ``means``, the targets' features, true labels and base classes), ``scores.npz`` (per
defense ``score__<name>`` = −log p(f | y) over D_t, flags, and ``score_train_clean__<name>`` over
D_C), ``examples.npz`` (``base``, ``target``, ``poison_ce``, ``poison_lgm`` with labels and
perturbation sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from poisonlab.attacks import PoisonedDataset
from poisonlab.attacks.feature_collision import FeatureCollision
from poisonlab.data.dataset import ImageDataset, concatenate
from poisonlab.data.splits import Split
from poisonlab.defenses import Detector, Evidence
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError
from poisonlab.experiments.tasks_base import CellSpec, TaskContext, register_plan, register_task
from poisonlab.experiments.tasks_common import (
    DataSpec,
    attack_error,
    build_detectors,
    cached_model,
    check_keys,
    detection_metrics,
    load_split,
    model_config,
    scores_arrays,
    task_option,
    train_recipe,
    write_npz,
)
from poisonlab.metrics.attack import clean_accuracy
from poisonlab.metrics.detection import evaluate_detection
from poisonlab.models import Network
from poisonlab.seeding import derive_seed, make_generator
from poisonlab.train import TrainConfig, predict, train_model
from poisonlab.validation import (
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    Boolean,
    Options,
    ParameterError,
)
from poisonlab.workflows import attack_success, filter_and_finetune
from poisonlab.workflows.collision_eval import TransferConfig, evaluate_transfer
from poisonlab.workflows.filtering import FilterReport, default_finetune_config
from poisonlab.workflows.lgm_paper_collision import (
    SEED000_SETTINGS,
    Seed000Result,
    craft_on_same_pairs,
)

TASK_KEYS = (
    "preset",
    "protocol",
    "finetune_epochs",
    "finetune_lr",
    "finetune_batch_size",
    "drop_targets",
    "oneshot",
    "auroc_on_train",
    "examples",
    "batch_size",
    "filter_ce",
)
PRESETS = ("seed000", "none")
PROTOCOLS = {"transfer": "head", "end-to-end": "all", "one-shot": "head-per-target"}
DEFAULT_DEFENSES = [{"name": "lgm-likelihood"}]


@dataclass(frozen=True, eq=False)
class CollisionPlan:
    """A feature-collision cell's parameters, validated without loading data or training."""

    data: DataSpec
    attack: FeatureCollision
    detectors: tuple[Detector, ...]
    finetune: str
    finetune_config: TrainConfig
    drop_targets: bool
    oneshot: bool
    auroc_on_train: bool
    examples: int
    batch_size: int
    filter_ce: bool = False


@register_plan("feature-collision")
def plan_collision(cell: CellSpec) -> CollisionPlan:
    """Validate a ``feature-collision`` cell (task keys, the attack, the detectors) and plan it.

    Raises
    ------
    ConfigError
        Naming the bad key or value.
    """
    task = cell.section("task")
    check_keys(task, TASK_KEYS, "task")
    preset = task_option(task, "preset", "seed000", [Options(PRESETS)])
    protocol = task_option(task, "protocol", "end-to-end", [Options(tuple(PROTOCOLS))])
    params = cell.section("attack")
    name = params.pop("name", "feature-collision")
    if name != "feature-collision":
        raise ConfigError(f"[attack] name must be feature-collision for this task, got {name!r}")
    try:
        attack = FeatureCollision(
            **({**SEED000_SETTINGS, **params} if preset == "seed000" else params)
        )
    except TypeError as exc:
        raise ConfigError(f"[attack] feature-collision: {exc}") from None
    except ParameterError:
        raise  # names the attack, the parameter and its range already
    except ConfigError as exc:
        raise attack_error(exc, "feature-collision") from None
    if attack.base_selection != "random":
        raise ConfigError(
            "Yaseen et al. 2020 compares CE and LGM on the same random pairs: base_selection"
        )
    overrides = {
        "epochs": task_option(task, "finetune_epochs", None, [POSITIVE_INT]),
        "lr": task_option(task, "finetune_lr", None, [POSITIVE]),
        "batch_size": task_option(task, "finetune_batch_size", None, [POSITIVE_INT]),
    }
    defaults = default_finetune_config(cell.seed).to_dict()
    entries = list(cell.params.get("defenses") or DEFAULT_DEFENSES)
    return CollisionPlan(
        data=DataSpec.from_section(cell.section("data")),
        attack=attack,
        detectors=tuple(build_detectors(entries, seed=cell.seed)),
        finetune=PROTOCOLS[protocol],
        finetune_config=TrainConfig(
            **{**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        ),
        drop_targets=task_option(task, "drop_targets", False, [Boolean()]),
        oneshot=task_option(task, "oneshot", False, [Boolean()]),
        auroc_on_train=task_option(task, "auroc_on_train", True, [Boolean()]),
        examples=task_option(task, "examples", 8, [NON_NEGATIVE_INT]),
        batch_size=task_option(task, "batch_size", 256, [POSITIVE_INT]),
        filter_ce=task_option(task, "filter_ce", False, [Boolean()]),
    )


@register_task("feature-collision")
def run_collision(cell: CellSpec, context: TaskContext) -> dict[str, float | int]:
    """Run one Yaseen et al. 2020 cell (module docstring) and return its flat metrics."""
    plan = plan_collision(cell)
    device = pick_device(context.device)
    split = load_split(plan.data)
    models: dict[str, Network] = {}
    metrics: dict[str, float | int] = {}
    for short, head in (("ce", "softmax"), ("lgm", "lgm")):
        config = model_config(cell.section("model"), split.train, default_arch="lgm-net", head=head)
        recipe = train_recipe(cell.section("train"), config.arch, len(split.train), cell.seed)
        models[short], _ = cached_model(
            context,
            what=f"{short.upper()} model",
            data_key=plan.data.key(),
            trained_on={"clean": "train"},
            config=config,
            recipe=recipe,
            data=split.train,
            device=device,
        )
        metrics[f"model.{short}.clean_accuracy"] = clean_accuracy(
            predict(models[short], split.holdout.images, device=device), split.holdout
        )

    context.log(f"crafting feature-collision poisons on {len(split.test)} D_f images")
    crafted = craft_on_same_pairs(
        plan.attack,
        models["ce"],
        models["lgm"],
        split.test,
        generator=make_generator(derive_seed(cell.seed, "attack")),
    )
    metrics |= _perturbation_metrics(crafted)
    fine = {"ce": crafted.ce, "lgm": crafted.lgm}
    if plan.drop_targets:
        fine = {m: _without_targets(p) for m, p in fine.items()}
    poisoned = fine["lgm"]
    metrics["attack.n_poison"] = poisoned.n_poison
    metrics["attack.n_train"] = len(poisoned.dataset)

    finetune, config = plan.finetune, plan.finetune_config
    protocol = {value: key for key, value in PROTOCOLS.items()}[finetune]
    for short in ("ce", "lgm"):
        metrics[f"collision.{short}.success_before"] = attack_success(
            models[short], fine[short], device=device
        )[0]
    results = {}
    train_scores: dict[str, Any] = {}
    for detector in plan.detectors if plan.filter_ce else ():
        context.log(f"filtering the CE model's D_t with {detector.name} (LGM model), fine-tuning")
        report = filter_and_finetune(
            models["ce"],
            fine["ce"],
            detector=detector,
            scorer=models["lgm"],
            holdout=split.holdout,
            test=split.holdout,
            finetune=finetune,
            train_config=config,
            device=device,
            seed=cell.seed,
        )
        metrics |= _filter_metrics(f"{detector.name}.ce", report)
        metrics["collision.ce.success_rate"] = report.success_without_filter
    if "collision.ce.success_rate" not in metrics:
        context.log(f"fine-tuning the CE model on D_t ({protocol})")
        metrics["collision.ce.success_rate"] = _finetuned_success(
            models["ce"], fine["ce"], config, finetune, device
        )
    metrics["attack.success_rate"] = metrics["collision.ce.success_rate"]

    for detector in plan.detectors:
        context.log(f"filtering D_t with {detector.name}, then fine-tuning the LGM model")
        report = filter_and_finetune(
            models["lgm"],
            poisoned,
            detector=detector,
            holdout=split.holdout,
            test=split.holdout,
            finetune=finetune,
            train_config=config,
            device=device,
            seed=cell.seed,
        )
        results[detector.name] = report.detection
        metrics |= _filter_metrics(detector.name, report)
        metrics["collision.lgm.success_rate"] = report.success_without_filter
        if plan.auroc_on_train:
            auroc, scores = _train_clean_auroc(detector, models["lgm"], split, poisoned)
            metrics[f"defense.{detector.name}.auroc_train_clean"] = auroc
            train_scores[f"score_train_clean__{detector.name}"] = scores
    if "collision.lgm.success_rate" not in metrics:
        metrics["collision.lgm.success_rate"] = _finetuned_success(
            models["lgm"], poisoned, config, finetune, device
        )
    if plan.oneshot:
        for short in ("ce", "lgm"):
            context.log(f"one-shot-kill transfer evaluation of the {short.upper()} model")
            evaluation = evaluate_transfer(models[short], fine[short])
            metrics[f"collision.{short}.oneshot_success_rate"] = evaluation.rate.rate

    arrays = scores_arrays(poisoned.is_poison, poisoned.dataset.labels, results)
    write_npz(context.cell_dir, "scores.npz", {**arrays, **train_scores})
    features = _features(models["lgm"], poisoned, device, plan.batch_size)
    write_npz(context.cell_dir, "features.npz", features)
    write_npz(context.cell_dir, "examples.npz", _examples(crafted, split.test, plan.examples))
    return metrics


def _filter_metrics(name: str, report: FilterReport) -> dict[str, float | int]:
    """``defense.<name>.*``: detection on D_t, what the filter removed, and the attack's success
    and clean accuracy after fine-tuning on the kept rows."""
    prefix = f"defense.{name}."
    metrics = detection_metrics(name, report.metrics, report.detection)
    metrics[prefix + "success_with_filter"] = report.success_with_filter
    metrics[prefix + "n_poison_removed"] = report.n_poison_removed
    metrics[prefix + "n_clean_removed"] = report.n_clean_removed
    if report.clean_accuracy_with_filter is not None:
        metrics[prefix + "clean_accuracy_with_filter"] = report.clean_accuracy_with_filter
    return metrics


def _perturbation_metrics(crafted: Seed000Result) -> dict[str, float | int]:
    """‖p − b‖ sizes, distance ratios and iterations per model (Seed000Result.summary)."""
    summary = crafted.summary()
    metrics: dict[str, float | int] = {}
    for short in ("ce", "lgm"):
        for key, value in summary[short].items():
            metrics[f"collision.{short}.{key}"] = value
    metrics["collision.lgm_larger_fraction"] = summary["pairs"]["lgm_larger_fraction"]
    return metrics


def _without_targets(poisoned: PoisonedDataset) -> PoisonedDataset:
    """``poisoned`` without the rows of its targets (which Yaseen et al. 2020 leaves in D_t)."""
    keep = torch.ones(len(poisoned.dataset), dtype=torch.bool)
    keep[torch.as_tensor(poisoned.extras["target_index"], dtype=torch.long)] = False
    return PoisonedDataset(
        dataset=poisoned.dataset.subset(keep),
        is_poison=poisoned.is_poison[keep],
        original_labels=poisoned.original_labels[keep],
        source_index=poisoned.source_index[keep],
        source_ids=poisoned.source_ids[keep.numpy()],
        attack=poisoned.attack,
        params=poisoned.params,
        targets=poisoned.targets,
        target_labels=poisoned.target_labels,
        extras=poisoned.extras,
    )


def _finetuned_success(
    model: Network,
    poisoned: PoisonedDataset,
    config: TrainConfig,
    finetune: str,
    device: torch.device,
) -> float:
    """Attack success after fine-tuning a copy of ``model`` on all of ``poisoned`` (no filter),
    with the same schedule as :func:`filter_and_finetune` uses."""
    import copy

    if finetune == "head-per-target":
        transfer = TransferConfig.warm_per_target(config)
        return evaluate_transfer(model, poisoned, config=transfer).rate.rate

    victim = copy.deepcopy(model)
    trainable = list(victim.head.parameters()) if finetune == "head" else None
    train_model(victim, poisoned.dataset, config, device=device, trainable=trainable)
    return attack_success(victim, poisoned, device=device)[0]


def _train_clean_auroc(
    detector: Any, model: Network, split: Split, poisoned: PoisonedDataset
) -> tuple[float, torch.Tensor]:
    """AUROC (poison positive) of ``detector`` refitted on D_C ∪ poisons, and the D_C scores."""
    train = split.train
    poisons = poisoned.dataset.subset(poisoned.is_poison)
    data = concatenate([train, poisons])
    is_poison = torch.cat(
        [torch.zeros(len(train), dtype=torch.bool), torch.ones(len(poisons), dtype=torch.bool)]
    )
    device = next(model.parameters()).device
    evidence = Evidence(data, model, holdout=split.holdout, device=device)
    result = detector.fit(evidence).result
    return evaluate_detection(result, is_poison).auroc, result.scores[: len(train)]


def _features(
    model: Network, poisoned: PoisonedDataset, device: torch.device, batch: int
) -> dict[str, Any]:
    """The LGM model's features of D_t and of the targets, for the 2-d scatter plot."""
    evidence = Evidence(poisoned.dataset, model, device=device, batch_size=batch)
    assert poisoned.targets is not None and poisoned.target_labels is not None
    targets = Evidence(poisoned.targets, model, device=device, batch_size=batch)
    head: Any = model.head
    return {
        "features": evidence.features(),
        "labels": poisoned.dataset.labels,
        "is_poison": poisoned.is_poison,
        "means": head.means.detach(),
        "target_features": targets.features(),
        "target_labels": poisoned.targets.labels,
        "target_base_labels": poisoned.target_labels,
    }


def _examples(crafted: Seed000Result, pool: ImageDataset, n: int) -> dict[str, Any]:
    """The first ``n`` (base, target, CE poison, LGM poison) quadruples and their sizes."""
    ce, lgm = crafted.ce, crafted.lgm
    base_rows = torch.as_tensor(ce.extras["base_index"][:n], dtype=torch.long)
    which = torch.as_tensor(ce.extras["poison_target"][:n], dtype=torch.long)
    assert ce.targets is not None and ce.target_labels is not None
    return {
        "base": pool.images[base_rows],
        "base_labels": pool.labels[base_rows],
        "target": ce.targets.images[which],
        "target_labels": ce.targets.labels[which],
        "poison_ce": ce.dataset.images[ce.is_poison][:n],
        "poison_lgm": lgm.dataset.images[lgm.is_poison][:n],
        "l2_ce": torch.as_tensor(ce.extras["perturbation_l2"][:n], dtype=torch.float64),
        "l2_lgm": torch.as_tensor(lgm.extras["perturbation_l2"][:n], dtype=torch.float64),
    }
