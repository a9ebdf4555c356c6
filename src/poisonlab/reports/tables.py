"""Tables from finished cells: mean ± spread over repeats, generic layouts, and the table type.

Every displayed number of ours is a **mean ± sample standard deviation** (ddof = 1) over the cells
that share a setting — the repeats and seeds of a grid point — and every row says how many (``n``).
NaN metrics ("undefined", e.g. AUROC without poisons) are left out of the mean and counted apart.

Each :class:`Table` keeps display strings (rich and Markdown) and long-format rows for CSV with
the raw numbers (one line per row × column: mean, std, var, n, the paper's value). Paper-style
tables (ours beside the published numbers) are built in :mod:`poisonlab.reports.compare`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poisonlab.errors import ConfigError, did_you_mean
from poisonlab.reports.records import (
    MISSING,
    CellRecord,
    available_metrics,
    flatten_params,
    param_value,
    sort_key,
    varying_paths,
)

CSV_HEADER = ["row", "column", "metric", "mean", "std", "var", "n", "n_undefined", "paper", "unit"]


@dataclass(frozen=True)
class Stat:
    """Mean, sample std and variance (ddof = 1; NaN for n < 2) of the finite values."""

    mean: float
    std: float
    var: float
    n: int
    n_undefined: int = 0

    def text(self, scale: float = 1.0, digits: int = 2, *, general: bool = False) -> str:
        """``mean ± std`` with ``digits`` decimals (significant digits when ``general``, for counts
        and seconds); just the mean for n = 1, ``-`` without values, ``undef.`` if all NaN."""
        if self.n == 0:
            return "undef." if self.n_undefined else "-"
        spec = f".{digits}g" if general else f".{digits}f"
        mean = format(self.mean * scale, spec)
        return mean if self.n < 2 else f"{mean} ± {format(self.std * scale, spec)}"


def summarize(values: Iterable[float]) -> Stat:
    """The :class:`Stat` of ``values``; NaN values are counted in ``n_undefined`` only."""
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    n = len(finite)
    nan = float("nan")
    var = float(finite.var(ddof=1)) if n >= 2 else nan
    return Stat(
        mean=float(finite.mean()) if n else nan,
        std=math.sqrt(var) if n >= 2 else nan,
        var=var,
        n=n,
        n_undefined=len(array) - n,
    )


@dataclass
class Table:
    """A rendered table: display header and rows, long-format CSV rows, and notes."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    csv_rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    empty: bool = False
    label_columns: int = 1


def number(value: float | None) -> float | str:
    """A CSV number: empty for None and NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def n_text(stats: Sequence[Stat]) -> str:
    """The repeat counts behind a row's means: ``3``, or ``2–3`` when they differ; ``0`` when
    the row has no value.

    A cell whose values are all undefined shows ``undef.`` and counts nothing here: one cell
    with an undefined AUROC beside measured numbers is ``n 1``, not ``0–1`` (the undefined
    values are counted in the notes and the CSV's ``n_undefined``).
    """
    counts = sorted({s.n for s in stats if s.n})
    if not counts:
        return "0"
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def undefined_note(table: Table) -> None:
    """Say when some values were NaN (undefined) and left out of the means."""
    undefined = sum(int(row[7]) for row in table.csv_rows)
    if undefined:
        table.notes.append(
            f"{undefined} undefined (NaN) values left out of the means and n "
            "(column n_undefined of the CSV)."
        )


def expand_metrics(patterns: Sequence[str], records: Sequence[CellRecord]) -> list[str]:
    """Metric names from names or shell patterns (``defense.*.auroc``) that the records have.

    Raises ConfigError naming the pattern and listing the available metric keys when one matches
    nothing.
    """
    have = available_metrics(records)
    names: list[str] = []
    for pattern in patterns:
        found = [m for m in have if fnmatch.fnmatchcase(m, pattern)]
        if not found:
            raise ConfigError(
                f"no metric {pattern!r} in the selected cells (available: {', '.join(have) or 'none'})"
            )
        names += [m for m in found if m not in names]
    return names


def _hashable(value: Any) -> Any:
    """Lists (e.g. a trigger window) as tuples, so parameter values can key a row."""
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _value(record: CellRecord, path: str) -> Any:
    """A record's parameter at ``path`` in hashable form."""
    return _hashable(param_value(record.params, path))


def _check_path(path: str, records: Sequence[CellRecord]) -> None:
    """ConfigError naming ``path`` and the parameter paths there are, when no record has it (a
    mistyped ``--rows`` made a column of "-")."""
    if any(param_value(r.params, path) is not MISSING for r in records):
        return
    have = sorted({p for r in records for p in flatten_params(r.params)})
    raise ConfigError(
        f"no parameter {path!r} in the selected cells{did_you_mean(path, have)} "
        f"(the paths that vary between them: {', '.join(varying_paths(records)) or 'none'})"
    )


def _display(value: Any) -> str:
    """A parameter value as a table label."""
    if value is MISSING:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def generic_table(
    records: Sequence[CellRecord],
    *,
    rows: Sequence[str],
    values: Sequence[str],
    cols: str | None = None,
    name: str = "table",
    title: str = "",
) -> Table:
    """Rows = distinct values of the ``rows`` parameter paths; columns = ``values`` metrics (per
    distinct value of the ``cols`` path when given); cells = mean ± std over matching cells."""
    if not records:
        raise ConfigError("no finished cells to tabulate")
    metrics = expand_metrics(values, records)
    for path in [*rows, *([cols] if cols else [])]:
        _check_path(path, records)
    counts = {  # integer metrics (n_poison, n_flagged...) print without decimals
        m for m in metrics if all(isinstance(r.metrics.get(m, 0), int) for r in records)
    }
    keys = sorted(
        {tuple(_value(r, p) for p in rows) for r in records},
        key=lambda k: [sort_key(v) for v in k],
    )
    col_values: list[Any] = [None]
    if cols:
        col_values = sorted({_value(r, cols) for r in records}, key=sort_key)
    header = [*rows] if rows else ["cells"]
    header.append("n")
    for c in col_values:
        for metric in metrics:
            header.append(metric if cols is None else f"{metric} @ {cols}={_display(c)}")
    table = Table(
        name=name, title=title or name, header=header, rows=[], label_columns=max(1, len(rows))
    )
    for key in keys:
        in_row = [
            r for r in records if all(_value(r, p) == v for p, v in zip(rows, key, strict=True))
        ]
        labels = [_display(v) for v in key] if rows else ["all"]
        cells, stats = [], []
        for c in col_values:
            chosen = in_row if cols is None else [r for r in in_row if _value(r, cols) == c]
            for metric in metrics:
                measured = [r.metrics[metric] for r in chosen if metric in r.metrics]
                stat = summarize(measured)
                stats.append(stat)
                cells.append(stat.text(digits=4, general=metric in counts))
                column = metric if cols is None else f"{cols}={_display(c)}"
                table.csv_rows.append(
                    [
                        " / ".join(labels),
                        column,
                        metric,
                        number(stat.mean),
                        number(stat.std),
                        number(stat.var),
                        stat.n,
                        stat.n_undefined,
                        "",
                        "as stored",
                    ]
                )
        table.rows.append([*labels, n_text(stats), *cells])
    table.notes.append("mean ± sample std (ddof=1) over n cells (repeats/seeds); values as stored.")
    undefined_note(table)
    pooled = varying_paths(records, ignore=[*rows, *([cols] if cols else [])])
    if pooled:
        table.notes.append("cells pooled over settings not in the table: " + ", ".join(pooled))
    return table


def transposed(table: Table) -> Table:
    """A generic table with its value columns as rows (``metric`` first, then one column per
    row setting, the counts in the first row): readable when there are many metrics."""
    width = table.label_columns
    settings = [
        " ".join(f"{k}={v}" for k, v in zip(table.header[:width], row, strict=False))
        if table.header[0] != "cells"
        else "all cells"
        for row in table.rows
    ]
    rows = [["n", *(row[width] for row in table.rows)]]
    rows += [
        [name, *(row[width + 1 + i] for row in table.rows)]
        for i, name in enumerate(table.header[width + 1 :])
    ]
    return Table(
        name=table.name,
        title=table.title,
        header=["metric", *settings],
        rows=rows,
        csv_rows=table.csv_rows,
        notes=table.notes,
        empty=table.empty,
        label_columns=1,
    )
