"""The task contract: what one grid cell of an experiment runs, and what it returns.

A *task* is a function registered by name (the ``kind`` of an experiment config) that runs one cell
— one combination of data, model, attack and defense parameters — and returns flat metrics.
Tasks are pure with respect to the runner: they read their parameters from :class:`CellSpec`,
write artifacts only under ``context.cell_dir``, and get trained models and other expensive
intermediate results through ``context.cache`` so cells that need the same model share it.

Metric names are flat, dot-separated and stable, because tables and reports read them:

- ``attack.clean_accuracy``, ``attack.asr``, ``attack.masr``, ``attack.success_rate`` (collision),
  ``attack.n_poison``, ``attack.n_train``, ``model.clean_accuracy`` (the model before the attack);
- ``defense.<name>.<metric>`` with metric in ``acc``, ``tpr``, ``tnr``, ``precision``, ``auroc``,
  ``aupr``, ``aupr_in``, ``tpr_at_fpr``, ``n_flagged``, ``n_analysed``, ``seconds``;
- ``accuracy.<model>.<set>`` for Subedar et al. 2019 Table 1 (model in dnn, df, bnn; set in
  clean, triggered);
- anything else a task documents. Values are floats (rates as fractions in [0, 1], not percent)
  or ints; NaN means "undefined" (e.g. AUROC without poisons).

Artifacts a task may leave in ``cell_dir`` for reports: ``scores.npz`` (``is_poison``, ``labels``,
``analysed``, and one ``score__<defense>`` / ``flagged__<defense>`` array per defense),
``features.npz`` (2-d LGM features with labels and poison mask), ``examples.npz`` (a few base /
target / poison images, or clean / poisoned pairs), ``heatmaps.npz`` (most suspicious images and
their relevance maps), each optional.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from poisonlab.registry import Registry


def stable_hash(value: Any, length: int = 16) -> str:
    """A short SHA-256 of ``value``'s canonical JSON (sorted keys): the identity of a cell or
    model."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class CellSpec:
    """One grid cell: the experiment name, its task kind, and fully resolved parameters.

    ``params`` has the sections of the config (``data``, ``model``, ``train``, ``attack``,
    ``defenses`` (a list of dicts with ``name`` and keyword parameters), ``task``) with every
    list-valued grid axis replaced by one value, plus ``seed`` and ``repeat``.
    """

    experiment: str
    kind: str
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """Content hash of kind + params: equal cells share a key across configs and runs."""
        return stable_hash({"kind": self.kind, "params": self.params})

    @property
    def seed(self) -> int:
        """The cell's seed (repeats get distinct seeds derived by the grid expansion)."""
        return int(self.params.get("seed", 0))

    def section(self, name: str) -> dict[str, Any]:
        """One section of ``params`` (empty dict when absent)."""
        value = self.params.get(name) or {}
        return dict(value)


class Cache(Protocol):
    """Content-addressed storage for expensive intermediate results shared between cells."""

    def path(self, kind: str, key: Any) -> Path:
        """Folder for the object of ``kind`` identified by ``key`` (hashed); may not exist yet."""
        ...

    def get_or_create(self, kind: str, key: Any, create: Callable[[Path], None]) -> Path:
        """Return the folder for (kind, key), calling ``create(folder)`` first if it is missing.

        Creation is atomic (a temporary folder renamed into place), so a killed run never leaves
        a half-written entry that a later cell would trust.
        """
        ...


@dataclass
class TaskContext:
    """What the runner gives a task: where to write, the shared cache, the device, progress."""

    cell_dir: Path
    cache: Cache
    device: str = "auto"
    log: Callable[[str], None] = field(default=lambda message: None)


Task = Callable[[CellSpec, TaskContext], dict[str, float | int]]

TASKS: Registry[Task] = Registry("experiment kind")
register_task = TASKS.register

Plan = Callable[[CellSpec], Any]
PLANS: Registry[Plan] = Registry("experiment plan")
"""Per kind, a function that validates one cell without loading data or training: it builds the
cell's attack and detectors and parses ``[data]`` and ``[task]`` (raising ConfigError naming the key
and value), and returns a plan whose ``data`` attribute, when present, is the cell's
:class:`~poisonlab.experiments.tasks_common.DataSpec`. A plan may also have a
``check_image_shape((C, H, W))`` method, raising the ConfigError the task would raise on images of
that shape; a check with the data sources calls it with the shape read from the source's headers.
Configs are checked by planning every cell before anything runs
(:mod:`poisonlab.experiments.checks`)."""
register_plan = PLANS.register
