"""Run an attack end to end: split, poison, save poisoned.npz, measure it, write attack.json.

This is the library side of `poisonlab attack` (the CLI only parses options). The measurement
after poisoning is looked up in ``EVALUATORS`` by attack name; trigger attacks
(:class:`poisonlab.attacks.badnets.BackdoorAttack`) fall back to :func:`evaluate_backdoor_attack`.
An evaluator gets an :class:`EvalContext` and returns the JSON-ready ``metrics`` of attack.json.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from poisonlab.attacks import Attack, PoisonedDataset
from poisonlab.attacks.badnets import BackdoorAttack
from poisonlab.data.splits import Split
from poisonlab.errors import ConfigError, DataError
from poisonlab.seeding import derive_seed, make_generator
from poisonlab.versions import package_versions

if TYPE_CHECKING:
    from poisonlab.train import TrainConfig

PROTOCOLS = ("transfer", "end-to-end")


@dataclass(frozen=True)
class RunSettings:
    """The command's settings that are not attack hyper-parameters."""

    data: str
    limit: int | None
    model_path: Path | None
    model: Any | None  # the loaded --model network
    arch: str  # victim (and default surrogate) architecture
    victim_epochs: int | None
    baseline: bool
    evaluate: bool
    seed: int
    device: torch.device
    out_dir: Path
    protocol: str = "transfer"  # feature-collision evaluation: transfer or end-to-end
    image_size: tuple[int, int] | None = None  # image folders and GTSRB: resized to it


@dataclass(frozen=True)
class EvalContext:
    """What an evaluator needs: the attack, its output, the data split and the settings."""

    attack: Attack
    poisoned: PoisonedDataset
    split: Split
    settings: RunSettings


VICTIM_MIN_STEPS = 1500
"""Optimizer steps a victim trains at least (unless ``victim_epochs`` is given)."""
VICTIM_MAX_EPOCHS = 100
"""The most epochs :data:`VICTIM_MIN_STEPS` may add up to (tiny sets stay quick)."""


def victim_recipe(arch: str, n_samples: int, *, epochs: int | None, seed: int) -> TrainConfig:
    """The recipe a victim (or baseline) model of ``poisonlab attack`` trains with.

    The architecture's default recipe, with enough epochs for at least :data:`VICTIM_MIN_STEPS`
    mini-batch steps (at most :data:`VICTIM_MAX_EPOCHS` epochs; early stopping still applies).
    Why: the recipes' epoch counts are tuned for clean accuracy on sets of thousands of images;
    on a small set like the 8×8 digits (about 23 steps per epoch) cnn-small's 20 epochs stop
    while the backdoor is still being learned (the best epoch is the last), so the attack would
    be judged on a half-trained victim (docs/methods.md#badnets, "A default the attack can
    win"). ``epochs`` (``--victim-epochs``) overrides it.
    """
    from poisonlab.train.recipes import default_recipe

    recipe = default_recipe(arch, n_samples, epochs=epochs, seed=seed)
    if epochs is not None:
        return recipe
    fitted = n_samples - round(recipe.val_fraction * n_samples)  # the validation part is held out
    steps_per_epoch = max(1, math.ceil(fitted / recipe.batch_size))
    needed = min(math.ceil(VICTIM_MIN_STEPS / steps_per_epoch), VICTIM_MAX_EPOCHS)
    return replace(recipe, epochs=max(recipe.epochs, needed))


def train_victim(
    ctx: EvalContext, data: Any, folder: str, description: str
) -> tuple[Any, dict[str, Any]]:
    """A fresh ``--arch`` model trained on ``data`` with :func:`victim_recipe`, saved to
    out/``folder``; returns (model, JSON-ready training summary)."""
    from poisonlab.models import ModelConfig, build_model, save_checkpoint
    from poisonlab.train import train_model

    run = ctx.settings
    c, h, w = data.shape
    model = build_model(ModelConfig(run.arch, c, h, w, data.num_classes), seed=run.seed)
    recipe = victim_recipe(run.arch, len(data), epochs=run.victim_epochs, seed=run.seed)
    result = train_model(model, data, recipe, device=run.device, description=description)
    save_checkpoint(model, run.out_dir / folder, trained_on=data.name, recipe=recipe.to_dict())
    return model, {"recipe": recipe.to_dict(), **result.to_dict()}


def evaluate_backdoor_attack(ctx: EvalContext) -> dict[str, Any]:
    """Train a victim on the poisoned set: clean accuracy, ASR, per-class ASR and MASR."""
    from poisonlab.workflows.backdoor_eval import measure_backdoor

    attack, poisoned = ctx.attack, ctx.poisoned
    assert isinstance(attack, BackdoorAttack) and poisoned.test_set is not None
    masr_generator = make_generator(derive_seed(ctx.settings.seed, "masr"))
    masr = attack.masr_set(ctx.split.test, generator=masr_generator)
    models = {"victim": train_victim(ctx, poisoned.dataset, "victim", "victim (poisoned data)")}
    if ctx.settings.baseline:
        models["baseline"] = train_victim(ctx, ctx.split.train, "baseline", "baseline (clean data)")
    metrics: dict[str, Any] = {}
    for role, (model, summary) in models.items():
        measured = measure_backdoor(
            model,
            ctx.split.test,
            poisoned.test_set,
            masr_set=masr.data,
            masr_source_labels=masr.source_labels,
            target=masr.target,
        )
        metrics[role] = {**measured.to_dict(), "training": summary}
    return metrics


EVALUATORS: dict[str, Callable[[EvalContext], dict[str, Any]]] = {}
"""Attack name → evaluator; trigger attacks default to :func:`evaluate_backdoor_attack`."""


def evaluate_collision_attack(ctx: EvalContext) -> dict[str, Any]:
    """Feature collision: the victim retrains on clean + each target's poisons (transfer: only the
    last layer on frozen features; end-to-end: every weight); success = target → base class.
    ``asr`` is that success rate, so the summary table reads like the backdoor one."""
    from poisonlab.train import TrainConfig
    from poisonlab.workflows.collision_eval import (
        TransferConfig,
        evaluate_end_to_end,
        evaluate_transfer,
    )

    run = ctx.settings
    assert run.model is not None, "run_attack trains a model for attacks that need one"
    if run.protocol == "transfer":
        config = TransferConfig(epochs=run.victim_epochs or 100, seed=run.seed)
        result = evaluate_transfer(
            run.model, ctx.poisoned, config=config, clean_test=ctx.split.test
        )
    else:
        tuning = TrainConfig(
            epochs=run.victim_epochs or 10,
            batch_size=64,
            lr=1e-4,
            val_fraction=0.0,
            patience=None,
            seed=run.seed,
        )
        result = evaluate_end_to_end(
            run.model, ctx.poisoned, config=tuning, per_target=True, clean_test=ctx.split.test
        )
    summary = result.to_dict()
    measured = {"clean_accuracy": summary["clean_accuracy_mean"], "asr": result.rate.rate}
    return {f"victim ({run.protocol})": {**measured, "masr": None, **summary}}


EVALUATORS["feature-collision"] = evaluate_collision_attack


def _clean_model(split: Split, run: RunSettings) -> Any:
    """The pre-trained network an attack needs when no --model is given: ``--arch`` trained on
    the clean training part with its default recipe, saved to out/model."""
    from poisonlab.models import ModelConfig, build_model, save_checkpoint
    from poisonlab.train import train_model
    from poisonlab.train.recipes import default_recipe

    c, h, w = split.train.shape
    model = build_model(ModelConfig(run.arch, c, h, w, split.train.num_classes), seed=run.seed)
    recipe = default_recipe(run.arch, len(split.train), seed=run.seed)
    train_model(model, split.train, recipe, device=run.device, description="model (clean data)")
    save_checkpoint(
        model, run.out_dir / "model", trained_on=split.train.name, recipe=recipe.to_dict()
    )
    return model.eval()


def _evaluator(attack: Attack) -> Callable[[EvalContext], dict[str, Any]]:
    if attack.name in EVALUATORS:
        return EVALUATORS[attack.name]
    if isinstance(attack, BackdoorAttack):
        return evaluate_backdoor_attack
    raise ConfigError(f"no evaluation is defined for {attack.name!r}; pass `evaluate=False`")


def _check_model_fits(network: Any, path: Path, split: Split) -> None:
    config = network.config
    if (
        tuple(config.input_shape) != split.train.shape
        or config.num_classes != split.train.num_classes
    ):
        raise ConfigError(
            f"checkpoint {path} expects {tuple(config.input_shape)} images in "
            f"{config.num_classes} classes; the data has {split.train.shape} in "
            f"{split.train.num_classes}"
        )


def _recorded_path(path: Path | None, out_dir: Path) -> str | None:
    """``path`` for attack.json: relative to the output folder when inside it (the CLI writes
    into a temporary folder that is renamed afterwards), else as given."""
    if path is None:
        return None
    return str(path.relative_to(out_dir) if path.is_relative_to(out_dir) else path)


def run_attack(attack: Attack, run: RunSettings) -> tuple[PoisonedDataset, dict[str, Any]]:
    """Split, poison, save poisoned.npz, evaluate, write attack.json; returns (poisoned, metrics)."""
    from poisonlab.data.prepare import prepare_splits

    split = prepare_splits(run.data, seed=run.seed, limit=run.limit, size=run.image_size)
    if run.evaluate and not len(split.test):  # refused before any training, not after it
        shrunk = f" (`limit` {run.limit}: each class keeps its share, rounded)" if run.limit else ""
        raise DataError(
            f"the test part of {split.test.name!r} has no images{shrunk}, so the attack cannot be "
            "measured; give a larger `limit`, or `evaluate=False` to only poison"
        )
    if run.model is not None:
        _check_model_fits(run.model, run.model_path, split)  # type: ignore[arg-type]
    if attack.needs_model and run.model is None:  # e.g. feature-collision: train one here
        run = replace(run, model=_clean_model(split, run), model_path=run.out_dir / "model")
    started = time.perf_counter()
    poisoned = attack.poison(
        split.train,
        generator=make_generator(derive_seed(run.seed, "attack", attack.name)),
        model=run.model,
        test=split.test,
    )
    attack_seconds = time.perf_counter() - started
    poisoned.save(run.out_dir / "poisoned.npz")
    context = EvalContext(attack, poisoned, split, run)
    metrics = _evaluator(attack)(context) if run.evaluate else {}
    report = {
        "attack": attack.name,
        "data": str(run.data),
        "seed": run.seed,
        "params": poisoned.params,
        "counts": {
            "train_clean": len(split.train),
            "train_poisoned": len(poisoned.dataset),
            "n_poison": poisoned.n_poison,
            "test": len(split.test),
            "triggered_test": len(poisoned.test_set) if poisoned.test_set is not None else None,
        },
        "attack_seconds": round(attack_seconds, 3),
        "victim_arch": run.arch if run.evaluate else None,
        "metrics": metrics,
        "extras": poisoned.extras,
        "model": _recorded_path(run.model_path, run.out_dir),
        # every package that can change the numbers, as scans and experiment cells record them;
        # torch as it reports itself (its local build tag included)
        "versions": {**package_versions(), "torch": torch.__version__},
    }
    (run.out_dir / "attack.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return poisoned, metrics
