"""Grid expansion: an experiment config's axes, ``[grid]`` controls, seeds and repeats to cells.

The rule (also in :mod:`poisonlab.experiments.config`): in ``[data]``, ``[model]``, ``[train]``,
``[attack]`` and ``[task]`` every list is an axis whose elements are its values, so a list-valued
parameter is a list of lists (``color = [[255, 0, 0]]``). The grid is the product of the axes in
file order (first axis slowest; a ``zip`` group counts as one axis placed at its first member),
then base seeds, then repeats. Repeat 0 keeps the base seed; repeat r > 0 gets
``derive_seed(seed, "repeat", r)``. ``exclude`` drops cells whose axis values match a rule.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poisonlab.errors import ConfigError
from poisonlab.experiments.tasks_base import CellSpec, stable_hash
from poisonlab.seeding import derive_seed

if TYPE_CHECKING:
    from poisonlab.experiments.config import ExperimentConfig

SECTIONS = ("data", "model", "train", "attack", "task")
GRID_KEYS = ("zip", "exclude")


@dataclass(frozen=True)
class GridCell:
    """A cell, its axis values (every axis) and a short description (the axes that vary)."""

    spec: CellSpec
    axes: dict[str, Any]
    index: int
    description: str


def grid_axes(config: ExperimentConfig) -> dict[str, list[Any]]:
    """Axis name (``section.key``) to its values, in file order; ``seed`` and ``repeat`` last."""
    axes = {
        f"{section}.{key}": list(value)
        for section in SECTIONS
        for key, value in getattr(config, section).items()
        if isinstance(value, list)
    }
    axes["seed"] = list(config.seeds)
    axes["repeat"] = list(range(config.repeats))
    return axes


def expand(config: ExperimentConfig) -> list[CellSpec]:
    """Every cell of the grid as a :class:`CellSpec`, in a deterministic order."""
    return [cell.spec for cell in expand_cells(config)]


def expand_cells(config: ExperimentConfig, *, where: str | None = None) -> list[GridCell]:
    """Every cell with its axis values; ConfigError for bad ``[grid]`` controls or axes."""
    where = where or (Path(config.source).name if config.source else config.name)
    axes = grid_axes(config)
    for name, values in axes.items():
        if not values:
            raise ConfigError(f"{where}: grid axis {name} is an empty list")
    unknown = sorted(set(config.grid) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: [grid] unknown key {unknown[0]!r}; allowed: {', '.join(GRID_KEYS)}"
        )
    groups = _zip_groups(config.grid.get("zip", []), axes, where)
    excludes = _excludes(config.grid.get("exclude", []), axes, where)
    for group in groups:
        rows = _group_rows(group, axes)
        if len({stable_hash(row) for row in rows}) != len(rows):
            values = axes[group[0]] if len(group) == 1 else [list(r.values()) for r in rows]
            raise ConfigError(
                f"{where}: grid axis {' + '.join(group)} repeats a value: {values} (every list "
                "is a grid axis, so a list-valued parameter is written as a list of lists, e.g. "
                "color = [[255, 0, 0]])"
            )
    cells: list[GridCell] = []
    for combo in itertools.product(*[_group_rows(g, axes) for g in groups]):
        chosen = {name: value for row in combo for name, value in row.items()}
        if any(all(chosen[k] == v for k, v in rule.items()) for rule in excludes):
            continue
        params: dict[str, Any] = {s: copy.deepcopy(getattr(config, s)) for s in SECTIONS}
        for name, value in chosen.items():
            if "." in name:
                section, key = name.split(".", 1)
                params[section][key] = copy.deepcopy(value)
        params["defenses"] = copy.deepcopy(list(config.defenses))
        seed, repeat = chosen["seed"], chosen["repeat"]
        params["seed"] = seed if repeat == 0 else derive_seed(seed, "repeat", repeat)
        params["repeat"] = repeat
        spec = CellSpec(config.name, config.kind, params)
        shown = {k: v for k, v in chosen.items() if len(axes[k]) > 1}
        cells.append(GridCell(spec, chosen, len(cells), describe(shown)))
    if not cells:
        raise ConfigError(f"{where}: [grid] exclude removes every cell of the grid")
    return cells


def _zip_groups(value: Any, axes: Mapping[str, list[Any]], where: str) -> list[list[str]]:
    """Axis groups for the product: each ``zip`` group is one, every other axis its own."""
    if not isinstance(value, list) or not all(isinstance(g, list) for g in value):
        raise ConfigError(
            f'{where}: [grid] zip must be a list of axis lists, e.g. [["attack.rate", "attack.count"]]'
        )
    zipped: dict[str, list[str]] = {}
    for group in value:
        for name in group:
            if name not in axes or name in ("seed", "repeat"):
                choices = ", ".join(a for a in axes if a not in ("seed", "repeat")) or "(no axes)"
                raise ConfigError(
                    f"{where}: [grid] zip names {name!r}, not an axis; axes: {choices}"
                )
            if name in zipped:
                raise ConfigError(f"{where}: [grid] zip lists axis {name!r} twice")
            zipped[name] = group
        if len({len(axes[name]) for name in group}) > 1:
            sizes = ", ".join(f"{n} has {len(axes[n])}" for n in group)
            raise ConfigError(f"{where}: [grid] zip axes need equal lengths: {sizes}")
    groups: list[list[str]] = []
    for name in axes:
        group = zipped.get(name, [name])
        if not any(group is placed for placed in groups):
            groups.append(group)
    return groups


def _group_rows(group: list[str], axes: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """The rows a group contributes: one per position of its (zipped) axes."""
    return [{name: axes[name][i] for name in group} for i in range(len(axes[group[0]]))]


def _excludes(value: Any, axes: Mapping[str, list[Any]], where: str) -> list[dict[str, Any]]:
    """``[grid] exclude`` rules as flat ``{axis: value}`` dicts (dotted keys or nested tables)."""
    if not isinstance(value, list) or not all(isinstance(rule, dict) for rule in value):
        raise ConfigError(
            f'{where}: [grid] exclude must be a list of tables, e.g. [{{"attack.rate" = 0.5}}]'
        )
    rules = []
    for rule in value:
        flat = _flatten(rule)
        for name in flat:
            if name not in axes:
                raise ConfigError(
                    f"{where}: [grid] exclude names {name!r}, not an axis; axes: {', '.join(axes)}"
                )
        rules.append(flat)
    return rules


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"attack": {"rate": 1}}`` and ``{"attack.rate": 1}`` both become ``{"attack.rate": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in SECTIONS:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def describe(axes: Mapping[str, Any]) -> str:
    """``rate=0.1 arch=cnn-small seed=0 r1``: axis values, sections dropped where unambiguous."""
    names = [name.rsplit(".", 1)[-1] for name in axes]
    parts = []
    for name, value in axes.items():
        short = name.rsplit(".", 1)[-1]
        if name == "repeat":
            parts.append(f"r{value}")
            continue
        label = short if names.count(short) == 1 else name
        text = value if isinstance(value, str) else stable_json(value)
        parts.append(f"{label}={text}")
    return " ".join(parts) or "cell"


def stable_json(value: Any) -> str:
    """Compact JSON for a value in a description (lists without spaces)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
