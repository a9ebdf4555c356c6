"""Label-consistent backdoor (Turner, Tsipras, Madry 2019, arXiv:1912.02771; Schulth et al. 2022
§3.1, §6.1.2).

Clean-label: the poisons are target-class training images that keep their true label.

1. A surrogate model: the one given, or one trained on the clean data with the same recipe
   (:func:`poisonlab.train.recipes.default_recipe` for ``surrogate_arch``).
2. Choose the poisons among the target class: round(p·n_target) images for ``target_rate`` p
   (default 0.33, Schulth et al. 2022's main setting), or a ``rate`` of the whole set, or a
   ``count``.
3. Make them hard to learn from their content: L∞ PGD that *maximises* the surrogate's
   cross-entropy on their true label (:func:`poisonlab.attacks.pgd.pgd_maximize_loss`; seed
   defaults 5 steps of 0.015 with a real ε = 0.075 projection).
4. Paste the trigger (Schulth et al. 2022's 3×3 yellow-green sticker by default, or Turner's
checkerboard
   at a reduced ``amplitude`` ∈ {32, 64, 128, 255}), labels unchanged. The poisons replace the
   chosen rows in place.

At test time the trigger is applied at full amplitude to every non-target class (MASR,
docs/methods.md#masr). Limits and assumptions: the surrogate is a standard (not adversarially
trained) model, as in Schulth et al. 2022 (docs/methods.md#label-consistent); the attack works only
if the victim relies on the trigger for the hardened images, which is weaker when the victim's
architecture or data differ from the surrogate's.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from poisonlab.attacks.badnets import (
    BackdoorAttack,
    check_class,
    next_generator,
    tagged_ids,
)
from poisonlab.attacks.base import PoisonedDataset, register_attack
from poisonlab.attacks.pgd import PGD_CONSTRAINTS, pgd_maximize_loss
from poisonlab.attacks.selection import Budget, choose_indices, poison_quotas
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.validation import (
    CLASS_INDEX,
    POSITIVE_INT,
    ConstraintList,
    Text,
    validate_params,
)

log = logging.getLogger(__name__)


def train_surrogate(
    train: ImageDataset,
    *,
    arch: str,
    seed: int,
    epochs: int | None = None,
    device: torch.device | str | None = None,
) -> Any:
    """A ``arch`` softmax model trained on ``train`` with the default recipe (``epochs``
    overrides)."""
    from poisonlab.models import ModelConfig, build_model
    from poisonlab.train import train_model
    from poisonlab.train.recipes import default_recipe

    c, h, w = train.shape
    model = build_model(ModelConfig(arch, c, h, w, train.num_classes), seed=seed)
    recipe = default_recipe(arch, len(train), epochs=epochs, seed=seed)
    train_model(model, train, recipe, device=device, description="surrogate")
    return model


@register_attack("label-consistent")
class LabelConsistent(BackdoorAttack):
    """Turner et al.'s label-consistent backdoor with PGD-hardened target-class poisons.

    Parameters
    ----------
    target : int
        The class the trigger should send every input to (Schulth et al. 2022: 5).
    rate, target_rate, count : at most one
        Budget; default ``target_rate=0.33`` (round(0.33·n_target) poisons, in place).
    eps : float in (0, 1]
        L∞ radius of the PGD perturbation on the [0, 1] pixel scale (default 0.075).
    steps : int in [0, 10000]
        PGD steps (default 5; 0 skips PGD: trigger only).
    step_size : float in (0, 1]
        PGD step α (default 0.015).
    surrogate_arch : str
        Architecture trained as the surrogate when :meth:`poison` gets no model.
    surrogate_epochs : int or None
        Epochs for that surrogate (None: the recipe's).
    batch_size : int >= 1
        PGD batch size (memory only; the poisons do not depend on it).
    trigger, size, color, gray, position, offset, window, amplitude
        The trigger (default the Schulth et al. 2022 yellow-green 3×3 sticker at random positions in
        a
        centred 10×15 window). ``amplitude`` < 255 gives Turner's reduced-amplitude checkerboard
        on the training poisons; test-time triggers are always full amplitude.
    device : str or None
        Where to train a surrogate (None: CUDA when available). Not a hyper-parameter: PGD runs
        where the surrogate's parameters are.
    """

    name = "label-consistent"
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        **BackdoorAttack._parameter_constraints,
        "target": [CLASS_INDEX],
        **PGD_CONSTRAINTS,
        "surrogate_arch": [Text("an architecture name")],
        "surrogate_epochs": [None, POSITIVE_INT],
        "batch_size": [POSITIVE_INT],
        "device": [None, Text("a device name (auto, cpu, cuda, cuda:N)")],
    }

    def __init__(
        self,
        *,
        target: int = 0,
        rate: float | None = None,
        target_rate: float | None = None,
        count: int | None = None,
        eps: float = 0.075,
        steps: int = 5,
        step_size: float = 0.015,
        surrogate_arch: str = "cnn-small",
        surrogate_epochs: int | None = None,
        batch_size: int = 256,
        trigger: str = "sticker",
        size: int | None = None,
        color: tuple[int, int, int] | None = None,
        gray: int | None = None,
        position: str | None = None,
        offset: int | None = None,
        window: tuple[int, int] | None = None,
        amplitude: int | None = None,
        device: str | None = None,
    ) -> None:
        checked = validate_params(  # the trigger keywords are Trigger's to check
            self.name,
            self._parameter_constraints,
            {
                "target": target,
                "rate": rate,
                "target_rate": target_rate,
                "count": count,
                "eps": eps,
                "steps": steps,
                "step_size": step_size,
                "surrogate_arch": surrogate_arch,
                "surrogate_epochs": surrogate_epochs,
                "batch_size": batch_size,
                "device": device,
            },
        )
        budget = Budget.from_args(
            rate=checked["rate"],
            target_rate=checked["target_rate"],
            count=checked["count"],
            default=Budget("target_rate", 0.33),
        )
        self.target = checked["target"]
        self._budget = budget
        self.rate, self.target_rate, self.count = budget.to_params().values()
        for key in (
            "eps",
            "steps",
            "step_size",
            "surrogate_arch",
            "surrogate_epochs",
            "batch_size",
        ):
            setattr(self, key, checked[key])
        self._device = checked["device"]
        self._set_trigger(
            trigger=trigger,
            size=size,
            color=color,
            gray=gray,
            position=position,
            offset=offset,
            window=window,
            amplitude=amplitude,
        )

    def attacker_labels(self, num_classes: int) -> Tensor:
        """int64 (K,): every class except the target → target (the target itself: -1)."""
        check_class("target", self.target, num_classes)
        assert self.target is not None  # a CLASS_INDEX constraint: never None here
        mapping = torch.full((num_classes,), self.target, dtype=torch.long)
        mapping[self.target] = -1
        return mapping

    def _surrogate(self, train: ImageDataset, model: Any | None, seed: int) -> tuple[Any, bool]:
        """The given model (checked against the data) or a freshly trained one."""
        if model is None:
            from poisonlab.device import pick_device

            log.info("training a %s surrogate on %d clean images", self.surrogate_arch, len(train))
            device = pick_device(self._device)
            return train_surrogate(
                train,
                arch=self.surrogate_arch,
                seed=seed,
                epochs=self.surrogate_epochs,
                device=device,
            ), True
        config = getattr(model, "config", None)
        if config is not None and (
            tuple(config.input_shape) != train.shape or config.num_classes != train.num_classes
        ):
            raise ConfigError(
                f"surrogate expects {tuple(config.input_shape)} images in {config.num_classes} "
                f"classes; the data has {train.shape} in {train.num_classes}"
            )
        return model, False

    def poison(
        self,
        train: ImageDataset,
        *,
        generator: torch.Generator,
        model: Any | None = None,
        test: ImageDataset | None = None,
    ) -> PoisonedDataset:
        """Harden and trigger target-class images in place; ``model`` is the surrogate (optional).

        Randomness, in order: the choice of poisons, the surrogate's seed (drawn even when a
        model is given, so the rest does not depend on it), the trigger positions, then a derived
        stream for the test-set trigger positions.
        """
        check_class("target", self.target, train.num_classes)
        self._trigger.check_fits(train.shape)
        assert self.target is not None
        quotas = poison_quotas(
            self._budget, train.class_counts(), {self.target: self.target}, appended=False
        )
        index = choose_indices(train.labels, quotas, generator=generator, budget=self._budget)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        surrogate, trained = self._surrogate(train, model, seed)
        hardened = pgd_maximize_loss(
            surrogate,
            train.images[index],
            train.labels[index],
            eps=self.eps,
            steps=self.steps,
            step_size=self.step_size,
            batch_size=self.batch_size,
        )
        poisons = self._trigger.apply(hardened.images, generator=generator)
        images = train.images.clone()
        images[index] = poisons
        ids = train.ids.astype(object)
        ids[index.numpy()] = tagged_ids(train.ids[index.numpy()], self.name)
        dataset = ImageDataset(
            images,
            train.labels.clone(),
            train.num_classes,
            train.class_names,
            f"{train.name}+{self.name}",
            np.asarray(ids, dtype=str),
        )
        is_poison = torch.zeros(len(train), dtype=torch.bool)
        is_poison[index] = True
        delta = (hardened.images - train.images[index]).flatten(1)
        extras: dict[str, Any] = {
            "poisons_per_class": {str(s): q for s, q in quotas.items()},
            "surrogate": {"trained": trained, "seed": seed if trained else None},
            "pgd": {
                "loss_before_mean": float(hardened.loss_before.mean()) if len(index) else None,
                "loss_after_mean": float(hardened.loss_after.mean()) if len(index) else None,
                "linf_max": float(delta.abs().max()) if len(index) else 0.0,
                "l2_mean": float(delta.norm(dim=1).mean()) if len(index) else 0.0,
            },
        }
        test_generator = next_generator(generator)
        test_set = self.test_set(test, generator=test_generator).data if test is not None else None
        return PoisonedDataset(
            dataset=dataset,
            is_poison=is_poison,
            original_labels=train.labels.clone(),
            source_index=torch.arange(len(train)),
            source_ids=train.ids.copy(),
            attack=self.name,
            params=self.params(),
            test_set=test_set,
            extras=extras,
        )
