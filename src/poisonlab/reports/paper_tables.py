"""The papers' published result tables, loaded from the data file shipped beside this module.

Why: ``poisonlab table`` prints our measurements beside the published numbers, so each table also
says which of *our* cells and metrics a paper cell corresponds to. The numbers and that mapping
live in ``paper_tables.toml`` (package data), read once by :func:`load_paper_tables`; this module
holds only the types and the loader. The tables come from two papers, each table carrying its
citation (:class:`Citation`):

- Subedar, Ahuja, Krishnan, Ndiour, Tickoo 2019, "Deep Probabilistic Models to Detect Data
  Poisoning Attacks" (arXiv:1912.01206), Tables 1–3: ``seed002-table1`` ... ``seed002-table3``;
- Schulth, Berghoff, Neu 2022, "Detecting Backdoor Poisoning Attacks on Deep Neural Networks by
  Heatmap Clustering" (arXiv:2204.12848), Tables 1–5: ``seed004-table1`` ... ``seed004-table5``.

Yaseen, Aadil, Sargsyan 2020 (arXiv:2003.00798) publishes no result table (its results are plots).
The table names are the identifiers experiment configs and ``--like`` use. What each table
measures and how it maps onto our experiments: docs/methods.md#published-tables.

A paper cell is found in the store by

- the table's row: ``select`` (parameter path → value, e.g. ``attack.target_rate = 0.33``) and/or
  a ``metric`` (Subedar et al.'s rows name a model), plus the paper's data set;
- the table's column: ``select`` (Subedar et al.'s columns are poison rates) and/or a ``metric``
  (Schulth et al.'s columns are detector metrics).

Exactly one of row and column names the metric. Parameter paths are dotted paths into a cell's
params (:func:`poisonlab.reports.records.param_value`); ``defenses.<name>.<key>`` reads the
keyword of the defense called ``<name>``. Metric names follow :mod:`poisonlab.experiments.tasks_base`.

Units: the papers print percent; values are stored **exactly as printed** (percent, ``None``
for the papers' "-"), and :meth:`PaperTable.fraction` converts to our fractions in [0, 1].
Schulth et al.'s Table 5 prints a spread row labelled σ² whose text calls it a standard
deviation; its rows carry ``stat="spread"`` and reports show our std and our variance beside it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

DATA_FILE = "paper_tables.toml"
"""The package data file holding every published table (beside this module)."""

STATS = ("mean", "spread")
ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")


@dataclass(frozen=True)
class Citation:
    """The paper a published table comes from, and which of its tables it is."""

    authors: tuple[str, ...]
    year: int
    title: str
    arxiv: str
    table: str
    venue: str = ""

    @property
    def short(self) -> str:
        """``Surname et al. YEAR`` (or the single or two surnames), e.g. ``Schulth et al. 2022``."""
        surnames = [name.split()[-1] for name in self.authors]
        if len(surnames) == 1:
            who = surnames[0]
        elif len(surnames) == 2:
            who = f"{surnames[0]} and {surnames[1]}"
        else:
            who = f"{surnames[0]} et al."
        return f"{who} {self.year}"

    def __str__(self) -> str:
        venue = f", {self.venue}" if self.venue else ""
        return (
            f'{", ".join(self.authors)} ({self.year}), "{self.title}"{venue}, '
            f"arXiv:{self.arxiv}, {self.table}"
        )


@dataclass(frozen=True)
class PaperColumn:
    """One published column: its header, and the metric or setting it stands for."""

    label: str
    metric: str | None = None
    select: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PaperRow:
    """One published row: its label cells, what it selects, and its values (percent as printed).

    ``dataset`` is the paper's data set as our source name (``mnist``, ``cifar10``, ``gtsrb``).
    ``stat`` is ``"mean"`` for an ordinary row and ``"spread"`` for a row of spreads (Schulth et
    al.'s Table 5 σ² row).
    """

    labels: tuple[str, ...]
    values: tuple[float | None, ...]
    dataset: str
    select: Mapping[str, Any] = field(default_factory=dict)
    metric: str | None = None
    stat: str = "mean"


@dataclass(frozen=True)
class PaperTable:
    """A published table with the mapping of each cell onto our parameters and metrics.

    ``source`` is the short label that starts the printed title and ``caption`` the rest;
    ``paper`` is the citation of the paper the table comes from. In the data file ``source``
    defaults to the citation's short form and table (``Subedar et al. 2019, Table 2``).
    """

    name: str
    source: str
    caption: str
    row_header: tuple[str, ...]
    columns: tuple[PaperColumn, ...]
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = ()
    paper: Citation | None = None

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row.values) != len(self.columns) or len(row.labels) != len(self.row_header):
                raise ValueError(f"{self.name}: row {row.labels} does not fit the header")
            for column in self.columns:
                if (row.metric is None) == (column.metric is None):
                    raise ValueError(
                        f"{self.name}: row {row.labels} × column {column.label!r} must name "
                        "exactly one metric"
                    )

    @property
    def datasets(self) -> tuple[str, ...]:
        """The paper's data sets, in row order, without repeats."""
        return tuple(dict.fromkeys(row.dataset for row in self.rows))

    def metric(self, row: PaperRow, column: PaperColumn) -> str:
        """Our metric name for one cell."""
        name = row.metric or column.metric
        assert name is not None  # guaranteed by __post_init__
        return name

    def selection(self, row: PaperRow, column: PaperColumn) -> dict[str, Any]:
        """Parameter path → value that our cells must have to stand for this paper cell."""
        return {**row.select, **column.select}

    def metrics(self) -> list[str]:
        """Every metric the table needs, in first-use order."""
        names = (self.metric(r, c) for r in self.rows for c in self.columns)
        return list(dict.fromkeys(names))

    def row(self, *labels: str) -> PaperRow:
        """The row with these label cells (KeyError listing the rows otherwise)."""
        for row in self.rows:
            if row.labels == tuple(labels):
                return row
        raise KeyError(f"{self.name} has no row {labels}; rows: {[r.labels for r in self.rows]}")

    def value(self, row_labels: Sequence[str], column: str) -> float | None:
        """The published value (percent as printed) at a row's labels and a column header."""
        row = self.row(*row_labels)
        for i, c in enumerate(self.columns):
            if c.label == column:
                return row.values[i]
        raise KeyError(f"{self.name} has no column {column!r}")

    def fraction(self, row_labels: Sequence[str], column: str) -> float | None:
        """The published value as a fraction in [0, 1], as our metrics are."""
        value = self.value(row_labels, column)
        return None if value is None else value / 100.0


# -- the loader ------------------------------------------------------------------------------


class _Entry:
    """One TOML table being read: typed field access with errors naming the file and the place."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
        self.data = data
        self.where = where

    def _fail(self, key: str, expected: str) -> ConfigError:
        value = self.data.get(key)
        return ConfigError(f"{self.where}: {key} must be {expected}, got {value!r}")

    def check_keys(self, allowed: Sequence[str]) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{self.where}: unknown key {unknown[0]!r} (expected one of {', '.join(allowed)})"
            )

    def text(self, key: str, *, required: bool = True) -> str | None:
        if key not in self.data and not required:
            return None
        value = self.data.get(key)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        return value

    def texts(self, key: str, *, required: bool = True) -> tuple[str, ...]:
        if key not in self.data and not required:
            return ()
        value = self.data.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._fail(key, "a list of non-empty strings")
        return tuple(value)

    def integer(self, key: str) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, "an integer")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self._fail(key, 'a table of parameter path = value, e.g. { "attack.rate" = 0.1 }')
        return dict(value)

    def entries(self, key: str) -> list[_Entry]:
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            raise self._fail(key, "a non-empty list of tables")
        return [_Entry(item, f"{self.where}, {key}[{i}]") for i, item in enumerate(value)]


def _citation(entry: _Entry) -> Citation:
    entry.check_keys(("authors", "year", "title", "venue", "arxiv", "table"))
    arxiv = entry.text("arxiv")
    if not ARXIV_ID.match(str(arxiv)):
        raise entry._fail("arxiv", "an arXiv identifier such as 2204.12848")
    return Citation(
        authors=entry.texts("authors"),
        year=entry.integer("year"),
        title=str(entry.text("title")),
        arxiv=str(arxiv),
        table=str(entry.text("table")),
        venue=entry.text("venue", required=False) or "",
    )


def _values(entry: _Entry) -> tuple[float | None, ...]:
    """Row values: numbers as printed, the paper's "-" as None."""
    raw = entry.data.get("values")
    if not isinstance(raw, list) or not all(
        v == "-" or (isinstance(v, int | float) and not isinstance(v, bool)) for v in raw
    ):
        raise entry._fail("values", 'a list of numbers (percent as printed) or "-"')
    return tuple(None if v == "-" else v for v in raw)


def _column(entry: _Entry) -> PaperColumn:
    entry.check_keys(("label", "metric", "select"))
    return PaperColumn(
        label=str(entry.text("label")),
        metric=entry.text("metric", required=False),
        select=entry.mapping("select"),
    )


def _row(entry: _Entry) -> PaperRow:
    entry.check_keys(("labels", "dataset", "metric", "select", "stat", "values"))
    stat = entry.text("stat", required=False) or "mean"
    if stat not in STATS:
        raise entry._fail("stat", f"one of {', '.join(STATS)}")
    return PaperRow(
        labels=entry.texts("labels"),
        values=_values(entry),
        dataset=str(entry.text("dataset")),
        select=entry.mapping("select"),
        metric=entry.text("metric", required=False),
        stat=stat,
    )


def _table(entry: _Entry) -> PaperTable:
    entry.check_keys(
        ("name", "paper", "source", "caption", "row_header", "notes", "columns", "rows")
    )
    name = str(entry.text("name"))
    entry.where = f"{entry.where} ({name})"
    paper = _citation(_Entry(entry.data.get("paper"), f"{entry.where}, paper"))
    source = entry.text("source", required=paper is None)
    try:
        return PaperTable(
            name=name,
            source=str(source) if source else f"{paper.short}, {paper.table}",  # type: ignore[union-attr]
            caption=str(entry.text("caption")),
            row_header=entry.texts("row_header"),
            columns=tuple(_column(c) for c in entry.entries("columns")),
            rows=tuple(_row(r) for r in entry.entries("rows")),
            notes=entry.texts("notes", required=False),
            paper=paper,
        )
    except ConfigError:
        raise
    except ValueError as exc:  # the shape checks of PaperTable
        raise ConfigError(f"{entry.where}: {exc}") from None


def load_paper_tables(path: str | Path | None = None) -> dict[str, PaperTable]:
    """Every published table by name, read from ``path`` (default: the packaged data file).

    Raises
    ------
    ConfigError
        Naming the file, the table and the field, when the file is missing, is not TOML, or a
        table is malformed (unknown key, wrong type, a row that does not fit its header, a cell
        that does not name exactly one metric, a repeated name).
    """
    if path is None:
        source = resources.files("poisonlab.reports").joinpath(DATA_FILE)
        where = f"{DATA_FILE} (package poisonlab.reports)"
    else:
        source = Path(path)
        where = str(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: the published-tables file does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not a valid TOML file ({exc})") from None
    document = _Entry(raw, where)
    document.check_keys(("table",))
    tables: dict[str, PaperTable] = {}
    for entry in document.entries("table"):
        table = _table(entry)
        if table.name in tables:
            raise ConfigError(f"{where}: table name {table.name!r} appears twice")
        tables[table.name] = table
    return tables


PAPER_TABLES: dict[str, PaperTable] = load_paper_tables()
"""Every published table by name (``seed002-table1`` ... ``seed004-table5``)."""


def paper_table(name: str) -> PaperTable:
    """The table called ``name``; ConfigError listing the names otherwise."""
    try:
        return PAPER_TABLES[name]
    except KeyError:
        choices = ", ".join(PAPER_TABLES)
        raise ConfigError(f"no published table {name!r} (choose one of: {choices})") from None
