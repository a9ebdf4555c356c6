"""BadNets (Gu et al., arXiv:1708.06733): dirty-label backdoors with a visible trigger.

Poisons are triggered copies of chosen clean training images, relabelled by a label map:

- ``all-to-all``: y → (y + 1) mod K, every class a source (Subedar et al. 2019);
- ``all-to-one``: every class except ``target`` → ``target``;
- ``one-to-one``: ``source`` → ``target`` (Schulth et al. 2022's standard attack, 2 → 5 on GTSRB).

By default they are **appended** (``mode="append"``), so the victim also sees the clean original
(Subedar et al. 2019 / Schulth et al. 2022 semantics, docs/methods.md#badnets). ``mode="replace"``
modifies the chosen rows in place instead, which keeps the training-set size (the usual
BackdoorBench setting); the budget formulas follow the mode (see
:mod:`poisonlab.attacks.selection`).

The triggered test set holds, for all-to-all, every test image relabelled (y + 1) mod K; for
one-to-one, the source-class test images labelled ``target``; for all-to-one, every non-target
image labelled ``target``. :meth:`BackdoorAttack.masr_set` triggers every non-target class (MASR,
docs/methods.md#asr). Limits: BadNets is dirty-label; a human looking at the poisons sees both the
trigger and the wrong label.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from poisonlab.attacks.base import Attack, PoisonedDataset, register_attack
from poisonlab.attacks.selection import Budget, choose_indices, poison_quotas
from poisonlab.attacks.triggers import (
    TRIGGER_CONSTRAINTS,
    Trigger,
    TriggeredSet,
    trigger_test_set,
)
from poisonlab.data.dataset import ImageDataset, concatenate
from poisonlab.errors import ConfigError
from poisonlab.seeding import make_generator
from poisonlab.validation import (
    CLASS_INDEX,
    FRACTION,
    POSITIVE_INT,
    ConstraintList,
    Options,
    validate_params,
)

LABEL_MAPS = ("all-to-all", "all-to-one", "one-to-one")
MODES = ("append", "replace")
DEFAULT_RATE = 0.2
"""The budget when none is given: poisons are 20% of the poisoned training set
(docs/methods.md#badnets)."""


BUDGET_CONSTRAINTS: dict[str, ConstraintList] = {
    "rate": [None, FRACTION],
    "target_rate": [None, FRACTION],
    "count": [None, POSITIVE_INT],
}
"""The three budget keywords every poisoning attack takes (at most one is given)."""


def check_class(name: str, value: int | None, num_classes: int) -> None:
    """ConfigError when a class index does not exist in data with ``num_classes`` classes."""
    if value is not None and value >= num_classes:
        raise ConfigError(f"{name} must lie in [0, {num_classes - 1}] for this data, got {value}")


def tagged_ids(ids: np.ndarray, tag: str) -> np.ndarray:
    """``f"{id}+{tag}"`` for each id: a poison's id traces back to its clean source sample."""
    return np.array([f"{i}+{tag}" for i in ids], dtype=str).reshape(len(ids))


def next_generator(generator: torch.Generator) -> torch.Generator:
    """A fresh generator seeded from ``generator`` (an independent stream for a later stage)."""
    return make_generator(int(torch.randint(0, 2**62, (1,), generator=generator)))


class BackdoorAttack(Attack):
    """Shared by trigger attacks: a :class:`Trigger` from flat options, triggered test sets.

    Subclasses call :meth:`_set_trigger` in ``__init__`` and define :meth:`attacker_labels`
    (the test-time label map). Hyper-parameters live in public attributes, so :meth:`params`
    returns exactly the keyword arguments that rebuild the attack.
    """

    target: int | None = None
    # Trigger keywords are checked by Trigger itself (owner "trigger"), with the rules that
    # depend on the kind; they are declared here so every keyword of an attack has constraints.
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        **BUDGET_CONSTRAINTS,
        **TRIGGER_CONSTRAINTS,
    }

    def _set_trigger(self, **options: Any) -> None:
        self._trigger = Trigger(
            **{("kind" if k == "trigger" else k): v for k, v in options.items()}
        )
        for key, value in self._trigger.to_params().items():
            setattr(self, key, value)

    @property
    def trigger_spec(self) -> Trigger:
        """The resolved trigger."""
        return self._trigger

    @abstractmethod
    def attacker_labels(self, num_classes: int) -> Tensor:
        """Test-time label map: int64 (K,) giving the attacker's label per true class, -1 = none."""

    def test_set(
        self, test: ImageDataset, *, generator: torch.Generator | None = None
    ) -> TriggeredSet:
        """The triggered test set (full amplitude) whose accuracy is the attack success rate."""
        mapping = self.attacker_labels(test.num_classes)
        return trigger_test_set(
            test, self._trigger, mapping, tag=self.name, generator=generator, target=self.target
        )

    def masr_set(
        self, test: ImageDataset, *, generator: torch.Generator | None = None
    ) -> TriggeredSet:
        """Every class except the target triggered and labelled ``target`` (MASR, Schulth et al.
        2022 §5.1).

        With no single target (all-to-all) this is the test set itself: the mean of its
        per-class rates is then the unweighted mean ASR over source classes.
        """
        if self.target is None:
            return self.test_set(test, generator=generator)
        check_class("target", self.target, test.num_classes)
        mapping = torch.full((test.num_classes,), self.target, dtype=torch.long)
        mapping[self.target] = -1
        return trigger_test_set(
            test, self._trigger, mapping, tag=self.name, generator=generator, target=self.target
        )


@register_attack("badnets")
class BadNets(BackdoorAttack):
    """Dirty-label backdoor: triggered copies of clean images with the attacker's labels.

    Parameters
    ----------
    label_map : {"all-to-all", "all-to-one", "one-to-one"} or None
        None infers it: ``source`` and ``target`` → one-to-one, ``target`` only → all-to-one,
        neither → all-to-all.
    source, target : int or None
        Source and target classes (one-to-one needs both, all-to-one the target only).
    rate, target_rate, count : at most one
        Budget (see :mod:`poisonlab.attacks.selection`): fraction of the poisoned training set
        (default 0.2, a rate of Subedar et al. 2019's Table 1; at 0.1 an all-to-all backdoor is
        learned only partly on small or low-resolution data, docs/methods.md#badnets), fraction
        of the target class (Schulth et al. 2022), or an exact count.
    mode : {"append", "replace"}
        Add the poisons as new rows (default) or modify the chosen rows in place.
    trigger, size, color, gray, position, offset, window, amplitude
        The trigger (:class:`poisonlab.attacks.triggers.Trigger`; default the MNIST pattern).
    """

    name = "badnets"
    _parameter_constraints: ClassVar[dict[str, ConstraintList]] = {
        **BackdoorAttack._parameter_constraints,
        "label_map": [None, Options(LABEL_MAPS)],
        "source": [None, CLASS_INDEX],
        "target": [None, CLASS_INDEX],
        "mode": [Options(MODES)],
    }

    def __init__(
        self,
        *,
        label_map: str | None = None,
        source: int | None = None,
        target: int | None = None,
        rate: float | None = None,
        target_rate: float | None = None,
        count: int | None = None,
        mode: str = "append",
        trigger: str = "pattern",
        size: int | None = None,
        color: tuple[int, int, int] | None = None,
        gray: int | None = None,
        position: str | None = None,
        offset: int | None = None,
        window: tuple[int, int] | None = None,
        amplitude: int | None = None,
    ) -> None:
        checked = validate_params(  # the trigger keywords are Trigger's to check
            self.name,
            self._parameter_constraints,
            {
                "label_map": label_map,
                "source": source,
                "target": target,
                "rate": rate,
                "target_rate": target_rate,
                "count": count,
                "mode": mode,
            },
        )
        label_map, source, target = checked["label_map"], checked["source"], checked["target"]
        if label_map is None:
            if source is not None and target is None:
                raise ConfigError("source needs a target (one-to-one label map)")
            label_map = (
                "one-to-one"
                if source is not None
                else "all-to-one"
                if target is not None
                else "all-to-all"
            )
        if label_map == "all-to-all" and (source is not None or target is not None):
            raise ConfigError("the all-to-all label map takes no source or target")
        if label_map == "all-to-one" and (target is None or source is not None):
            raise ConfigError("the all-to-one label map needs a target and no source")
        if label_map == "one-to-one":
            if source is None or target is None:
                raise ConfigError("the one-to-one label map needs both source and target")
            if source == target:
                raise ConfigError(f"source and target must differ, both are {source}")
        budget = Budget.from_args(
            rate=checked["rate"],
            target_rate=checked["target_rate"],
            count=checked["count"],
            default=Budget("rate", DEFAULT_RATE),
        )
        self.label_map = label_map
        self.source = source
        self.target = target
        self._budget = budget
        self.rate, self.target_rate, self.count = budget.to_params().values()
        self.mode = checked["mode"]
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
        """int64 (K,): (y+1) mod K, the target for every other class, or the target for the
        source."""
        check_class("source", self.source, num_classes)
        check_class("target", self.target, num_classes)
        if self.label_map == "all-to-all":
            return (torch.arange(num_classes) + 1) % num_classes
        assert self.target is not None
        mapping = torch.full((num_classes,), -1, dtype=torch.long)
        if self.label_map == "all-to-one":
            mapping[:] = self.target
            mapping[self.target] = -1
        else:
            assert self.source is not None
            mapping[self.source] = self.target
        return mapping

    def poison(
        self,
        train: ImageDataset,
        *,
        generator: torch.Generator,
        model: Any | None = None,
        test: ImageDataset | None = None,
    ) -> PoisonedDataset:
        """Poison ``train``; with ``test``, the result carries the triggered test set.

        ``model`` is ignored (BadNets needs none). Randomness: the choice of poisons, then the
        trigger positions, then (from a derived stream) the test-set trigger positions.
        """
        self._trigger.check_fits(train.shape)
        mapping = self.attacker_labels(train.num_classes)
        sources = {s: int(mapping[s]) for s in range(train.num_classes) if mapping[s] >= 0}
        appended = self.mode == "append"
        quotas = poison_quotas(self._budget, train.class_counts(), sources, appended=appended)
        index = choose_indices(train.labels, quotas, generator=generator, budget=self._budget)
        images = self._trigger.apply(train.images[index], generator=generator)
        new_labels = mapping[train.labels[index]]
        new_ids = tagged_ids(train.ids[index.numpy()], self.name)
        n = len(train)
        if appended:
            poisons = ImageDataset(
                images, new_labels, train.num_classes, train.class_names, train.name, new_ids
            )
            dataset = concatenate([train, poisons], name=f"{train.name}+{self.name}")
            is_poison = torch.cat(
                [torch.zeros(n, dtype=torch.bool), torch.ones(len(index), dtype=torch.bool)]
            )
            original = torch.cat([train.labels, train.labels[index]])
            source_index = torch.cat([torch.arange(n), index])
        else:
            all_images, labels = train.images.clone(), train.labels.clone()
            all_images[index], labels[index] = images, new_labels
            ids = train.ids.astype(object)
            ids[index.numpy()] = new_ids
            dataset = ImageDataset(
                all_images,
                labels,
                train.num_classes,
                train.class_names,
                f"{train.name}+{self.name}",
                np.asarray(ids, dtype=str),
            )
            is_poison = torch.zeros(n, dtype=torch.bool)
            is_poison[index] = True
            original, source_index = train.labels.clone(), torch.arange(n)
        test_generator = next_generator(generator)
        test_set = self.test_set(test, generator=test_generator).data if test is not None else None
        return PoisonedDataset(
            dataset=dataset,
            is_poison=is_poison,
            original_labels=original,
            source_index=source_index,
            source_ids=train.ids[source_index.numpy()],
            attack=self.name,
            params=self.params(),
            test_set=test_set,
            extras={"poisons_per_class": {str(s): q for s, q in quotas.items()}},
        )
