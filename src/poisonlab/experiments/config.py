"""Experiment configs: a TOML file describing a grid of cells, validated and expanded.

A config file looks like this::

    name = "backdoor-rates"           # folder under the runs directory (default: the file stem)
    kind = "backdoor"                 # a registered task (poisonlab.experiments.tasks_*)
    description = "BadNets at 10..50% against AC and spectral signatures"
    seeds = [0, 1]                    # base seeds (default [0])
    repeats = 3                       # runs per seed; repeat r > 0 gets derive_seed(seed, "repeat", r)

    [data]                            # read by the task (source, limit, holdout, test, seed,
    source = "digits"                 # image_size: an image folder or GTSRB resized, as by the
                                      # commands' --image-size: [[32, 24]], "32x24" or 32)
    [model]                           # arch (poisonlab.models) + ModelConfig fields (head, ...)
    arch = ["cnn-small", "lgm-net"]   # a list: a grid axis
    [train]                           # TrainConfig fields (epochs, lr, optimizer, ...)
    epochs = 3
    [attack]                          # name (poisonlab.attacks) + the attack's keyword parameters
    name = "badnets"
    rate = [0.1, 0.3, 0.5]
    color = [[255, 0, 0]]             # ONE value that is itself a list (see the grid rule)
    [[defenses]]                      # every defense runs in every cell; never a grid axis
    name = "activation-clustering"
    n_components = 10
    [task]                            # task-specific options, free-form
    [paper]                           # optional: table = "seed002-table1" (the table reproduced)
    [grid]                            # optional grid controls
    zip = [["attack.rate", "attack.count"]]          # these axes vary together, not crossed
    exclude = [{"model.arch" = "lgm-net", "attack.rate" = 0.5}]   # drop matching cells

**The grid rule.** In ``[data]``, ``[model]``, ``[train]``, ``[attack]`` and ``[task]`` *every
list is a grid axis*, and its elements are the values the axis takes. A parameter whose value is
itself a list (an RGB colour, ``classes``, a window) is therefore written as a list of lists:
``color = [[255, 0, 0]]`` is one colour, ``color = [[255, 0, 0], [0, 0, 255]]`` two cells. Inline
tables are values, never axes. Lists inside ``[[defenses]]`` are plain values. The grid is the
product of all axes (``zip`` groups counting as one), then seeds, then repeats, in file order; the
first axis varies slowest. Axis names are ``section.key``, plus ``seed`` and ``repeat``.

**Validation** names the file, the section and key, and the allowed choices. The file's shape is
checked here (top-level keys, ``kind`` among the registered tasks, tables, seeds, repeats, each
defense's registered name, ``[grid]``); then every cell of the grid is *planned*
(:mod:`poisonlab.experiments.checks`): its attack and detectors are built and its ``[data]``,
``[model]``, ``[train]`` and ``[task]`` sections parsed by the code that will run them, so the
checks are the constructors' own (:mod:`poisonlab.validation`) and every problem of every cell is
reported at once, before anything runs. ``load_config(..., check_data=True)`` also checks that
each data source exists (what ``poisonlab run`` and ``--dry-run`` do).

**Overrides.** ``--set section.key=value`` (value in TOML syntax; a bare word is a string) replaces
a key after the file is read: defaults < file < CLI. ``--set seeds=[0,1]`` sets a top-level key,
``--set defenses.NAME.param=value`` a parameter of the defense called NAME.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

from poisonlab.errors import ConfigError
from poisonlab.experiments.checks import ConfigProblems, check_cells
from poisonlab.experiments.grid import (
    SECTIONS,
    GridCell,
    describe,
    expand,
    expand_cells,
    grid_axes,
)
from poisonlab.experiments.tasks_base import TASKS, stable_hash
from poisonlab.validation import NON_NEGATIVE_INT, POSITIVE_INT, Items, check_param

__all__ = [
    "ExperimentConfig",
    "GridCell",
    "apply_overrides",
    "config_from_dict",
    "describe",
    "expand",
    "expand_cells",
    "grid_axes",
    "load_config",
    "task_names",
]
TOP_LEVEL = (
    "name",
    "kind",
    "description",
    "seeds",
    "repeats",
    *SECTIONS,
    "defenses",
    "paper",
    "grid",
)
GEOMETRY = ("arch", "in_channels", "height", "width", "num_classes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment config: sections hold TOML values, lists being grid axes."""

    name: str
    kind: str
    description: str = ""
    seeds: tuple[int, ...] = (0,)
    repeats: int = 1
    data: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] = field(default_factory=dict)
    defenses: tuple[dict[str, Any], ...] = ()
    task: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    overrides: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the resolved config (what RUNS/<name>/config.json records)."""
        data = asdict(self)
        data["seeds"], data["defenses"] = list(self.seeds), list(self.defenses)
        data["overrides"] = list(self.overrides)
        return data

    @property
    def hash(self) -> str:
        """Content hash of everything that defines the grid (not the file's path)."""
        data = self.to_dict()
        for key in ("source", "overrides", "description"):
            data.pop(key)
        return stable_hash(data)


def task_names() -> list[str]:
    """Registered experiment kinds, after importing ``poisonlab.experiments.tasks_*`` modules."""
    import poisonlab.experiments as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("tasks_") and module.name != "tasks_base":
            importlib.import_module(f"poisonlab.experiments.{module.name}")
    return TASKS.names()


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, check_data: bool = False
) -> ExperimentConfig:
    """Read, override (``--set`` strings) and validate a TOML config; ConfigError names the file.

    Every cell is planned (module docstring); ``check_data`` also checks that each data source
    exists. All problems are reported together (:class:`~poisonlab.experiments.checks.ConfigProblems`).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; expected a TOML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: not valid TOML: {exc}") from None
    raw.setdefault("name", path.stem)
    return config_from_dict(
        raw, where=path.name, source=str(path), overrides=overrides, check_data=check_data
    )


def config_from_dict(
    raw: Mapping[str, Any],
    *,
    where: str = "<config>",
    source: str | None = None,
    overrides: Sequence[str] = (),
    check_data: bool = False,
) -> ExperimentConfig:
    """Validate a parsed config (as from TOML) after applying ``--set`` overrides, planning every
    cell; ``check_data`` also checks the data sources."""
    data = apply_overrides(copy.deepcopy(dict(raw)), overrides, where)
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(TOP_LEVEL)}")
    name = _string(data, "name", where, required=True)
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-'")
    if "kind" not in data:  # an empty file, or TOML that is not an experiment config
        raise ConfigError(
            f"{where}: no kind (the experiment's task, a top-level key); choose one of: "
            f"{', '.join(task_names())}"
        )
    kind = _string(data, "kind", where, required=True)
    if kind not in task_names():
        raise ConfigError(
            f"{where}: unknown kind {kind!r}; choose one of: {', '.join(TASKS.names()) or '(none registered)'}"
        )
    sections = {s: _table(data, s, where) for s in (*SECTIONS, "paper", "grid")}
    table = sections["paper"].get("table", "")
    if not isinstance(table, str):
        raise ConfigError(f'{where}: [paper] table must be a string like "seed002-table1"')
    config = ExperimentConfig(
        name=name,
        kind=kind,
        description=_string(data, "description", where),
        seeds=_seeds(data.get("seeds", [0]), where),
        repeats=_positive_int(data.get("repeats", 1), "repeats", where),
        defenses=_defenses(data.get("defenses", []), where),
        source=source,
        overrides=tuple(overrides),
        **sections,
    )
    cells = expand_cells(config, where=where)  # validates the grid controls and the axes
    problems = check_cells(config, cells, data=check_data)
    if problems:
        raise ConfigProblems(where, problems)
    return config


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], where: str) -> dict[str, Any]:
    """Apply ``key=value`` strings to a parsed config in place (and return it)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"`overrides` item {item!r}: expected section.key=value")
        value = _parse_value(text.strip())
        if parts[0] == "defenses" and len(parts) >= 3:
            defenses = raw.get("defenses", [])
            match = [d for d in defenses if isinstance(d, dict) and d.get("name") == parts[1]]
            if not match:
                names = ", ".join(str(d.get("name")) for d in defenses if isinstance(d, dict))
                raise ConfigError(
                    f"`overrides` {key}: {where} has no defense {parts[1]!r}; defenses: {names or '(none)'}"
                )
            target, parts = match[0], parts[2:]
        else:
            target = raw
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"`overrides` {key}: {part!r} is not a table in {where}")
        target[parts[-1]] = value
    return raw


def _parse_value(text: str) -> Any:
    """A TOML value (``0.1``, ``[1, 2]``, ``"x"``, ``true``); anything else is a bare string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _string(data: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value


def _positive_int(value: Any, key: str, where: str) -> int:
    return int(check_param(f"{where}:", key, value, [POSITIVE_INT]))


_SEEDS = Items(NON_NEGATIVE_INT, what="a non-empty list of integers >= 0")


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, list) and len(set(map(repr, value))) != len(value):
        raise ConfigError(f"{where}: seeds {value} repeat a value")
    return tuple(check_param(f"{where}:", "seeds", value, [_SEEDS]))


def _table(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table, got {value!r}")
    return dict(value)


def _defenses(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    """A list of tables; each entry's name and parameters are checked when cells are planned
    (:mod:`poisonlab.experiments.checks`), beside every other problem of the config."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise ConfigError(f"{where}: defenses must be [[defenses]] tables, got {value!r}")
    return tuple(dict(entry) for entry in value)
