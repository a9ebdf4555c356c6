"""The attack contract: a poisoned training set that carries its own ground truth."""

from __future__ import annotations

import functools
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from poisonlab.data.dataset import DATASET, ImageDataset, npz_pixels, save_npz
from poisonlab.data.npz import load_npz_with, npz_part
from poisonlab.errors import DataError
from poisonlab.ranges import counted
from poisonlab.registry import Registry
from poisonlab.validation import InstanceOf, Validated, check_param

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False, repr=False)
class PoisonedDataset:
    """A training set after an attack, with everything needed to evaluate attacks and defenses.

    Parameters
    ----------
    dataset : ImageDataset
        What the victim trains on (clean rows bit-identical to the input, plus the poisons).
    is_poison : Tensor of shape (N,), bool
        True where a sample was modified or injected by the attack.
    original_labels : Tensor of shape (N,), int64
        Labels before the attack (equal to ``dataset.labels`` for clean-label attacks).
    source_index : Tensor of shape (N,), int64
        Row of the clean input set each sample came from (a poison's base image).
    source_ids : ndarray of str, shape (N,)
        Id of that clean source sample in the user's data (``dataset.ids`` of the input).
    attack : str
        Registry name of the attack.
    params : dict
        Resolved hyper-parameters (every default filled in), copied into reports.
    test_set : ImageDataset or None
        Inputs carrying the trigger, labelled with the attacker's desired labels: accuracy on it is
        the attack success rate (backdoor attacks).
    targets : ImageDataset or None
        Target images with their true labels (feature collision); success = predicted as
        ``target_labels`` (the base class).
    target_labels : Tensor or None
        The class each target should be misclassified as.
    extras : dict
        Per-poison measurements (e.g. perturbation norms), never required by metrics.
    """

    dataset: ImageDataset
    is_poison: Tensor
    original_labels: Tensor
    source_index: Tensor
    source_ids: np.ndarray
    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    test_set: ImageDataset | None = None
    targets: ImageDataset | None = None
    target_labels: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.dataset)
        for name in ("is_poison", "original_labels", "source_index"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.shape != (n,):
                got = f"{type(value).__name__} of shape {tuple(np.shape(value))}"
                raise DataError(
                    f"PoisonedDataset.{name} must be a tensor of shape ({n},), one per image of "
                    f"the dataset; got {got}"
                )
        if np.asarray(self.source_ids).shape != (n,):
            raise DataError(
                f"PoisonedDataset.source_ids must have shape ({n},); got "
                f"{np.asarray(self.source_ids).shape}"
            )
        if self.is_poison.dtype != torch.bool:
            raise DataError(
                f"PoisonedDataset.is_poison must be a bool tensor, got {self.is_poison.dtype} "
                "(mask.bool() makes one)"
            )

    @property
    def n_poison(self) -> int:
        """Number of poisoned samples."""
        return int(self.is_poison.sum())

    def __repr__(self) -> str:
        """The attack, its poisons and the data, e.g. ``PoisonedDataset('badnets', 140 poisons of
        1398, ImageDataset(...), test_set=ImageDataset(...))``, not every tensor."""
        parts = [f"{self.attack!r}", f"{counted(self.n_poison, 'poison')} of {len(self.dataset)}"]
        parts.append(repr(self.dataset))
        for name in ("test_set", "targets"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"PoisonedDataset({', '.join(parts)})"

    def save(self, path: str | Path) -> Path:
        """Write poisoned.npz: the data (x, y, ids, class_names), the ground truth, attack and
        params (JSON), and what measures the attack later (see :meth:`load`).

        Raises
        ------
        DataError
            Before writing, when :meth:`load` could not read the file back (a test set or targets
            of another image shape, labels outside the data's classes).
        """
        path = Path(path)
        measuring = self._measuring_arrays()
        try:  # the loader's own checks: a file load() would refuse is never written
            targets = npz_part(path, measuring, "target_", self.dataset)
            npz_part(path, measuring, "test_", self.dataset)
            _target_labels(measuring, targets, self.dataset.num_classes, path)
            _poison_target(measuring, targets, self.n_poison, path)
        except DataError as exc:
            raise DataError(
                f"PoisonedDataset.save: {exc} (test_* holds test_set, target_* the targets)"
            ) from None
        return save_npz(
            self.dataset,
            path,
            is_poison=self.is_poison.numpy(),
            original_label=self.original_labels.numpy(),
            source_index=self.source_index.numpy(),
            source_id=np.asarray(self.source_ids, dtype=str),
            attack=np.asarray(self.attack, dtype=str),
            params=np.asarray(json.dumps(self.params, default=str), dtype=str),
            **measuring,
        )

    def _measuring_arrays(self) -> dict[str, np.ndarray]:
        """The triggered test set (``test_x``, ``test_y``, ``test_ids``), the targets
        (``target_x``, ...), ``target_labels`` and ``poison_target``, those the set has. The file
        holds one class list, the data's: a part's labels are read back as the data's classes."""
        arrays: dict[str, np.ndarray] = {}
        for prefix, part in (("test_", self.test_set), ("target_", self.targets)):
            if part is None:
                continue
            arrays[f"{prefix}x"] = npz_pixels(part.images)
            arrays[f"{prefix}y"] = part.labels.numpy()
            arrays[f"{prefix}ids"] = np.asarray(part.ids, dtype=str)
        if self.target_labels is not None:
            arrays["target_labels"] = self.target_labels.numpy()
        if self.extras.get("poison_target") is not None:
            arrays["poison_target"] = np.asarray(self.extras["poison_target"], dtype=np.int64)
        return arrays

    @classmethod
    def load(cls, path: str | Path) -> PoisonedDataset:
        """The poisoned set :meth:`save` (or ``poisonlab attack``) wrote to ``path``.

        The data goes through the .npz loader's checks (``load_dataset(path)`` gives the same
        ``dataset``); ``is_poison``, ``original_label``, ``source_index`` and ``source_id`` must be
        there, one per image. ``test_set`` (backdoors), ``targets``, ``target_labels`` and
        ``extras["poison_target"]`` (feature collision) come back as saved (with the data's class
        names), checked as the data is, so the attack can be measured again; they are None in a file written before they were
        saved, or by an attack given no ``test``. Other extras are not saved (``attack.json``
        beside a ``poisonlab attack`` file has them). ``params`` come back as JSON gives them,
        lists as tuples; a file written before ``attack`` and ``params`` were saved loads with
        attack ``"unknown"`` and no params.

        Raises
        ------
        DataError
            Naming the file and the array that is missing or malformed.
        """
        path = Path(path)
        dataset, arrays = load_npz_with(path, (*_COLUMNS, "attack", "params", *_MEASURING))
        missing = [key for key in _COLUMNS if key not in arrays]
        if missing:
            raise DataError(
                f"{path}: not a poisoned set (as PoisonedDataset.save and poisonlab attack write "
                f"it): no {', '.join(map(repr, missing))} array"
            )
        n, k = len(dataset), dataset.num_classes
        for key, expected, valid in (
            ("original_label", f"labels in [0, {k - 1}]", lambda v: (v >= 0) & (v < k)),
            ("source_index", "row indices >= 0", lambda v: v >= 0),
        ):
            _check_integers(arrays[key], key, n, "image", expected, valid, path)
        source_id = arrays["source_id"]
        if source_id.shape != (n,) or source_id.dtype.kind not in "US":
            raise DataError(
                f"{path}: 'source_id' must be {n} strings, one per image; got "
                f"{source_id.dtype}{source_id.shape}"
            )
        is_poison = torch.from_numpy(arrays["is_poison"].astype(bool))
        targets = npz_part(path, arrays, "target_", dataset)
        return cls(
            dataset=dataset,
            is_poison=is_poison,
            original_labels=torch.from_numpy(arrays["original_label"].astype(np.int64)),
            source_index=torch.from_numpy(arrays["source_index"].astype(np.int64)),
            source_ids=source_id.astype(str),
            attack=_text(arrays.get("attack"), "attack", path) or "unknown",
            params=_params(arrays.get("params"), path),
            test_set=npz_part(path, arrays, "test_", dataset),
            targets=targets,
            target_labels=_target_labels(arrays, targets, k, path),
            extras=_poison_target(arrays, targets, int(is_poison.sum()), path),
        )


_COLUMNS = ("is_poison", "original_label", "source_index", "source_id")
"""The per-image arrays of a poisoned.npz beside the data's x, y and ids."""

_MEASURING = (
    *("test_x", "test_y", "test_ids", "target_x", "target_y", "target_ids"),
    *("target_labels", "poison_target"),
)
"""The arrays that measure the attack later (:meth:`PoisonedDataset._measuring_arrays`)."""


def _check_integers(
    value: np.ndarray,
    key: str,
    n: int,
    per: str,
    expected: str,
    valid: Callable[[np.ndarray], np.ndarray],
    path: Path,
) -> None:
    """DataError naming ``key`` unless it holds ``n`` integers (one per ``per``), all ``valid``."""
    if not (value.shape == (n,) and np.issubdtype(value.dtype, np.integer)):
        raise DataError(
            f"{path}: {key!r} must be {n} integer {expected}, one per {per}; got "
            f"{value.dtype}{value.shape}"
        )
    bad = np.flatnonzero(~valid(value))
    if bad.size:  # the shape and dtype were right: name the value that is not
        raise DataError(
            f"{path}: {key!r} must be {n} integer {expected}, one per {per}; got "
            f"{value[bad[0]]} at row {bad[0]} ({counted(bad.size, 'such row')})"
        )


def _target_labels(
    arrays: dict[str, np.ndarray], targets: ImageDataset | None, k: int, path: Path
) -> Tensor | None:
    """The class each saved target should be predicted as (None without targets)."""
    if targets is None:
        if "target_labels" in arrays:
            raise DataError(f"{path}: 'target_labels' without the targets ('target_x')")
        return None
    if "target_labels" not in arrays:
        raise DataError(f"{path}: 'target_x' without 'target_labels'")
    value = arrays["target_labels"]
    expected = f"labels in [0, {k - 1}]"
    _check_integers(
        value, "target_labels", len(targets), "target", expected, lambda v: (v >= 0) & (v < k), path
    )
    return torch.from_numpy(value.astype(np.int64))


def _poison_target(
    arrays: dict[str, np.ndarray], targets: ImageDataset | None, n_poison: int, path: Path
) -> dict[str, Any]:
    """``{"poison_target": [...]}``, the target of each poison, when the file has it."""
    value = arrays.get("poison_target")
    if value is None:
        return {}
    if targets is None:
        raise DataError(f"{path}: 'poison_target' without the targets ('target_x')")
    t = len(targets)
    expected = f"indices in [0, {t - 1}] of the targets"
    _check_integers(
        value, "poison_target", n_poison, "poison", expected, lambda v: (v >= 0) & (v < t), path
    )
    return {"poison_target": value.astype(np.int64).tolist()}


def _text(value: np.ndarray | None, key: str, path: Path) -> str | None:
    """A single string stored as a 0-d array, None when absent."""
    if value is None:
        return None
    if value.shape != () or value.dtype.kind != "U":
        raise DataError(f"{path}: {key!r} must be one string; got {value.dtype}{value.shape}")
    return str(value[()])


def _params(value: np.ndarray | None, path: Path) -> dict[str, Any]:
    """The attack's parameters, stored as a JSON object in one string ({} when absent), lists as
    tuples."""
    text = _text(value, "params", path)
    if text is None:
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: 'params' is not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise DataError(f"{path}: 'params' must be a JSON object; got {type(params).__name__}")
    # JSON has no tuples: a (rows, cols) window or (R, G, B) colour comes back as Attack.params
    # gives it (no attack takes a list)
    return {key: tuple(v) if isinstance(v, list) else v for key, v in params.items()}


class Attack(Validated, ABC):
    """Base class: hyper-parameters in ``__init__`` (validated there), data in :meth:`poison`.

    Every keyword of ``__init__`` is declared in ``_parameter_constraints``
    (:mod:`poisonlab.validation`), so a bad value fails when the attack is built, naming the attack,
    the parameter and the accepted range, before any data is read or any surrogate is trained.
    """

    name: ClassVar[str]
    needs_model: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every attack's :meth:`poison` checks its data and generator first (see
        :func:`check_poison_inputs`), and warns when its poisons outnumber the clean images of a
        class (:func:`majority_warning`), so a new attack gets the same messages without a line."""
        super().__init_subclass__(**kwargs)
        poison = cls.__dict__.get("poison")
        if poison is None or getattr(poison, "__isabstractmethod__", False):
            return

        @functools.wraps(poison)
        def checked(self: Attack, train: Any, *args: Any, **kwargs: Any) -> PoisonedDataset:
            check_poison_inputs(self._owner(), train, kwargs)
            poisoned: PoisonedDataset = poison(self, train, *args, **kwargs)
            message = majority_warning(self._owner(), poisoned)
            if message is not None:
                logger.warning(message)
            return poisoned

        cls.poison = checked  # type: ignore[method-assign]

    def params(self) -> dict[str, Any]:
        """Resolved hyper-parameters, JSON-ready."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @abstractmethod
    def poison(
        self,
        train: ImageDataset,
        *,
        generator: torch.Generator,
        model: Any | None = None,
        test: ImageDataset | None = None,
    ) -> PoisonedDataset:
        """Poison ``train``; ``test`` supplies the images for the triggered test set or targets."""


def majority_warning(owner: str, poisoned: PoisonedDataset) -> str | None:
    """A warning when the poisons of some class outnumber its clean images (None otherwise).

    Defenses that look for a minority within a class (activation clustering's smaller cluster,
    spectral signatures' top scores, the per-class verdicts' break test) then single out the
    clean images instead: all-to-one BadNets at ``rate=0.1`` on 6,000 Fashion-MNIST images puts
    666 poisons beside 600 T-shirts, and activation clustering on cnn-small trained on them
    ranked the clean T-shirts first (AUROC 0.12).
    """
    labels = poisoned.dataset.labels
    k = poisoned.dataset.num_classes
    poisons = torch.bincount(labels[poisoned.is_poison], minlength=k)
    clean = torch.bincount(labels[~poisoned.is_poison], minlength=k)
    over = (poisons > clean).nonzero().flatten().tolist()
    if not over:
        return None
    names = poisoned.dataset.class_names
    listed = ", ".join(
        f"{c}{'' if names[c] == str(c) else f' ({names[c]})'}: {counted(int(poisons[c]), 'poison')}, "
        f"{int(clean[c])} clean"
        for c in over[:3]
    )
    more = f" and {len(over) - 3} more" if len(over) > 3 else ""
    return (
        f"{owner}: poisons outnumber the clean images of class {listed}{more}; defenses that "
        "look for a minority within a class (activation clustering, spectral signatures, the "
        "verdicts) will single out the clean images instead (rate= is the poisons' share of the "
        "whole training set; target_rate= their share of the target class)"
    )


_GENERATOR = InstanceOf(torch.Generator, "a torch.Generator (torch.Generator().manual_seed(0))")


def check_poison_inputs(owner: str, train: Any, kwargs: dict[str, Any]) -> None:
    """ParameterError naming the attack, the argument and the value when ``train`` or ``test`` is
    not an ImageDataset or ``generator`` not a torch.Generator (a seed, a path, a tensor...)."""
    check_param(owner, "train", train, [DATASET])
    if "generator" in kwargs:
        check_param(owner, "generator", kwargs["generator"], [_GENERATOR])
    check_param(owner, "test", kwargs.get("test"), [DATASET, None])


ATTACKS: Registry[type[Attack]] = Registry("attack")
register_attack = ATTACKS.register
