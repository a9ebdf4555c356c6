"""Finished experiment cells as plain records, and dotted paths into their parameters.

Tables and reports need only what a cell *was* (its experiment, key and resolved parameters) and
what it *measured* (flat metrics, :mod:`poisonlab.experiments.tasks_base`). :class:`CellRecord`
holds exactly that, so table code is tested on hand-made records and reads the runner's SQLite
store (``RUNS/results.sqlite``) through :func:`load_records` alone.

Parameter paths: ``attack.rate`` is ``params["attack"]["rate"]``; ``defenses.<name>.<key>`` is
keyword ``<key>`` of the entry named ``<name>`` in the ``defenses`` list (Schulth et al. 2022 Table
3 selects ``defenses.raw-clustering.reduce``); a top-level key (``seed``) is its own path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.reports.paper_tables import PAPER_TABLES

STORE_FILE = "results.sqlite"
REPEAT_KEYS = frozenset({"seed", "repeat"})
"""Parameters that distinguish repeats of one setting: pooled into mean ± spread."""


class _Missing:
    """The value of a parameter path a cell does not have (prints as a dash)."""

    def __repr__(self) -> str:
        return "-"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class CellRecord:
    """One finished cell: where it belongs, its resolved parameters, its flat metrics.

    ``paper`` is the ``[paper]`` section of its experiment's config, which the store keeps per
    experiment: ``table`` names the published table the config reproduces, and an optional
    ``data`` the paper's data set ours stands in for. ``description`` is the store's short text
    of the cell's varying axes (``rate=0.1 seed=0 r0``).
    """

    experiment: str
    key: str
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    status: str = "done"
    versions: Mapping[str, Any] = field(default_factory=dict)
    paper: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def _paper(self, key: str) -> str | None:
        """``paper[key]``, else ``params["paper"][key]`` (records made by hand), as text."""
        value = self.paper.get(key)
        if not value and isinstance(self.params.get("paper"), Mapping):
            value = self.params["paper"].get(key)
        return str(value) if value else None

    @property
    def paper_table(self) -> str | None:
        """The published table this cell's experiment reproduces, or None.

        A ``[paper] table`` naming no transcribed table (Yaseen et al. 2020 publishes plots, not
        tables) counts as none, so such experiments get the generic tables instead of an error.
        """
        name = self._paper("table")
        return name if name in PAPER_TABLES else None

    @property
    def paper_data(self) -> str | None:
        """The paper data set named by ``[paper] data`` (lower case), or None."""
        value = self._paper("data")
        return value.lower() if value else None


@dataclass(frozen=True)
class ExperimentInfo:
    """What the store knows about an experiment: its last resolved config and paper table."""

    name: str
    kind: str
    config: Mapping[str, Any]
    description: str = ""
    paper_table: str | None = None


def param_value(params: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (module docstring), or :data:`MISSING`."""
    if path in params:
        return params[path]
    head, _, rest = path.partition(".")
    if head not in params or not rest:
        return MISSING
    value = params[head]
    if head == "defenses" and isinstance(value, list):
        name, _, key = rest.partition(".")
        for entry in value:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                return param_value(entry, key) if key else entry
        return MISSING
    return param_value(value, rest) if isinstance(value, Mapping) else MISSING


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf parameter as ``path → value`` (lists other than ``defenses`` are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, path + "."))
        elif key == "defenses" and not prefix and isinstance(value, list):
            for entry in value:
                if isinstance(entry, Mapping) and "name" in entry:
                    rest = {k: v for k, v in entry.items() if k != "name"}
                    flat[f"defenses.{entry['name']}"] = True
                    flat.update(flatten_params(rest, f"defenses.{entry['name']}."))
        else:
            flat[path] = value
    return flat


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats floats within 1e-9 (relative) as equal and lists like tuples."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def matches(record: CellRecord, selection: Mapping[str, Any]) -> bool:
    """True when the record has every ``path → value`` of ``selection``."""
    return all(same_value(param_value(record.params, p), v) for p, v in selection.items())


def sort_key(value: Any) -> tuple[int, Any]:
    """Order mixed parameter values: numbers by value, then strings, then the rest by repr."""
    if isinstance(value, bool):
        return (2, str(value))
    if isinstance(value, int | float):
        return (0, float(value))
    if isinstance(value, str):
        return (1, value)
    return (3, repr(value))


def varying_paths(records: Iterable[CellRecord], ignore: Iterable[str] = ()) -> list[str]:
    """Parameter paths whose value differs between records (repeat keys and ``paper.*`` left out).

    These are the grid axes: the rows of a generic table, and the settings a pooled paper cell
    must not silently mix.
    """
    skip = set(ignore) | REPEAT_KEYS
    seen: dict[str, list[Any]] = {}
    for record in records:
        flat = flatten_params(record.params)
        for path in seen.keys() | flat.keys():
            seen.setdefault(path, []).append(flat.get(path, MISSING))
    varying = []
    for path, values in seen.items():
        if path in skip or path.startswith("paper."):
            continue
        if any(not same_value(values[0], v) for v in values[1:]):
            varying.append(path)
    return sorted(varying)


def available_metrics(records: Iterable[CellRecord]) -> list[str]:
    """Every metric name any record has, sorted."""
    return sorted({name for record in records for name in record.metrics})


def store_path(runs: str | Path) -> Path:
    """``RUNS/results.sqlite``; RUNS may also be the database file itself."""
    runs = Path(runs)
    return runs if runs.is_file() else runs / STORE_FILE


def _open_store(runs: str | Path) -> Any:
    """The runner's Store for ``runs`` (ConfigError when there is no database yet)."""
    path = store_path(runs)
    if not path.exists():
        raise ConfigError(f"no results store at {path}; run `poisonlab run CONFIG --runs {runs}`")
    from poisonlab.experiments.store import Store

    return Store(path)


def load_records(runs: str | Path, experiment: str | None = None) -> list[CellRecord]:
    """Finished (status done) cells of the current grids in the store under ``runs``.

    ``runs`` is the runs folder or its ``results.sqlite``. Raises ConfigError when there is no
    store, or when ``experiment`` names none of its experiments (the message lists them).
    """
    with _open_store(runs) as store:
        names = store.experiments()
        if experiment is not None and experiment not in names:
            known = ", ".join(names) or "none"
            raise ConfigError(
                f"no experiment {experiment!r} in {store_path(runs)} (experiments: {known})"
            )
        papers = {name: _paper_section(store.experiment(name)) for name in names}
        rows = store.cells(experiment, "done")
    return [to_record(row, paper=papers.get(getattr(row, "experiment", ""))) for row in rows]


def _paper_section(found: Any) -> dict[str, Any]:
    """An experiment row's ``[paper]`` section, with its ``paper_table`` column as ``table``."""
    if found is None:
        return {}
    config = getattr(found, "config", None) or {}
    paper = dict(config.get("paper") or {}) if isinstance(config, Mapping) else {}
    if getattr(found, "paper_table", None):
        paper["table"] = found.paper_table
    return paper


def load_experiment(runs: str | Path, name: str) -> ExperimentInfo | None:
    """The store's record of experiment ``name`` (its last resolved config), or None."""
    with _open_store(runs) as store:
        found = store.experiment(name)
    if found is None:
        return None
    return ExperimentInfo(
        name=found.name,
        kind=found.kind,
        config=dict(found.config),
        description=found.description,
        paper_table=found.paper_table,
    )


def to_record(row: Any, *, paper: Mapping[str, Any] | None = None) -> CellRecord:
    """A store row (an object or mapping with experiment, key, params, metrics...) as a record."""

    def get(name: str, default: Any = None) -> Any:
        if isinstance(row, Mapping):
            return row.get(name, default)
        return getattr(row, name, default)

    return CellRecord(
        experiment=str(get("experiment", "")),
        key=str(get("key", "")),
        params=dict(get("params") or {}),
        metrics={str(k): v for k, v in (get("metrics") or {}).items()},
        status=str(get("status", "done")),
        versions=dict(get("versions") or {}),
        paper=dict(paper or {}),
        description=str(get("description", "") or ""),
    )
