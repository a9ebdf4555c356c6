"""Paper-style tables: our measurements beside the published numbers of a seed paper's table.

Layouts follow :mod:`poisonlab.reports.paper_tables`: our rates are shown in percent, as the
papers print them, and each published column gets an ``ours`` and a ``paper`` column. When our
data set is not the paper's (the configs here run on digits and Fashion-MNIST), the row says so
(``digits (paper: MNIST)``): the numbers sit side by side, not claimed to be the same experiment.
Which paper data set ours stands in for comes from the config's ``[paper] data`` key when given
(e.g. ``data = "cifar10"`` for a GTSRB-like set), else from :data:`STAND_INS`, else
(single-data-set tables) the paper's only data set.

The notes of a table say what a reader must know to trust it: the unit and the spread, the
stand-in data sets, metrics the store lacks (with the ones it has), settings that were pooled
because the table does not separate them, and undefined values left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePath

from poisonlab.reports.paper_tables import PaperRow, PaperTable, paper_table
from poisonlab.reports.records import (
    CellRecord,
    available_metrics,
    matches,
    param_value,
    varying_paths,
)
from poisonlab.reports.tables import (
    Stat,
    Table,
    generic_table,
    n_text,
    number,
    summarize,
    undefined_note,
)

STAND_INS = {"digits": "mnist", "fashion-mnist": "mnist", "mnist": "mnist", "cifar10": "cifar10"}
"""Our data sets → the paper data set they stand in for (Subedar et al. 2019 has MNIST and
CIFAR-10)."""
DATA_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR10", "gtsrb": "GTSRB"}


def paper_dataset(record: CellRecord, table: PaperTable) -> str | None:
    """The paper data set a record's data stands in for (module docstring), or None."""
    if record.paper_data:
        return record.paper_data
    ours = data_name(record)
    if ours in table.datasets:
        return ours
    if len(table.datasets) == 1:
        return table.datasets[0]
    guess = STAND_INS.get(ours)
    return guess if guess in table.datasets else None


def data_name(record: CellRecord) -> str:
    """Our data set's name from ``data.source``: the source name of ``mnist:PATH``, a built-in
    name (``digits``), or the last component of a bare path (``/data/mnist`` → ``mnist``)."""
    for path in ("data.source", "data.name", "data"):
        value = param_value(record.params, path)
        if isinstance(value, str) and value:
            prefix, sep, _ = value.partition(":")
            if sep and prefix and "/" not in prefix:
                return prefix.lower()
            return (PurePath(value).name or value).lower()
    return "?"


def _row_labels(labels: tuple[str, ...], dataset: str, ours: str, experiment: str) -> list[str]:
    """Row labels naming our data when it differs from the paper's, and the experiment when
    several experiments fill the same row."""
    label = DATA_LABELS.get(dataset, dataset)
    out = list(labels)
    if ours != dataset and out and out[0].upper().startswith(label.upper()):
        out[0] = f"{ours} (paper: {label}){out[0][len(label) :]}"
    if experiment:
        out[0] = f"{out[0]} [{experiment}]"
    return out


def _groups(records: Sequence[CellRecord], table: PaperTable, row: PaperRow) -> list[tuple]:
    """(our data, experiment or "", records) filling ``row``: split by data set, and by
    experiment only when more than one experiment has cells for the row."""
    mine = [r for r in records if paper_dataset(r, table) == row.dataset and matches(r, row.select)]
    groups: list[tuple] = []
    for ours in dict.fromkeys(data_name(r) for r in mine):
        same = [r for r in mine if data_name(r) == ours]
        experiments = list(dict.fromkeys(r.experiment for r in same))
        if len(experiments) == 1:
            groups.append((ours, "", same))
        else:
            groups += [(ours, e, [r for r in same if r.experiment == e]) for e in experiments]
    return groups or [(row.dataset, "", [])]


SPREAD_LABELS = {"std": "std (paper: σ²)", "var": "var %² (paper: σ²)"}


def paper_style_table(
    records: Sequence[CellRecord], table: PaperTable | str, *, name: str = "", title: str = ""
) -> Table:
    """Ours (mean ± std in percent, n) beside the published numbers of ``table``.

    One display row per published row and per data set of ours that stands in for its data set (and
    per experiment when several fill it); the published row alone, with empty ``ours``, when nothing
    does. A ``spread`` row (Schulth et al. 2022 Table 5) becomes two rows: our std and our variance
    (%²), each beside the published σ².
    """
    table = paper_table(table) if isinstance(table, str) else table
    header = [*table.row_header, "n"]
    for column in table.columns:
        header += [f"{column.label} ours", f"{column.label} paper"]
    out = Table(
        name=name or table.name,
        title=title or f"{table.source}: {table.caption}",
        header=header,
        rows=[],
        label_columns=len(table.row_header),
    )
    stand_ins: dict[str, set[str]] = {}
    pooled: set[str] = set()
    for row in table.rows:
        for ours, experiment, group in _groups(records, table, row):
            if group:
                stand_ins.setdefault(row.dataset, set()).add(ours)
            labels = _row_labels(row.labels, row.dataset, ours, experiment)
            stats = []
            for column in table.columns:
                selection = table.selection(row, column)
                metric = table.metric(row, column)
                chosen = [r for r in group if matches(r, selection) and metric in r.metrics]
                pooled.update(varying_paths(chosen, ignore=selection))
                stats.append(summarize(r.metrics[metric] for r in chosen))
            kinds = ["mean"] if row.stat == "mean" else ["std", "var"]
            for kind in kinds:
                shown = labels if kind == "mean" else [*labels[:-1], SPREAD_LABELS[kind]]
                cells = [*shown, n_text(stats)]
                for column, value, stat in zip(table.columns, row.values, stats, strict=True):
                    cells += [_percent_text(stat, kind), "-" if value is None else f"{value:g}"]
                    out.csv_rows.append(
                        [
                            " / ".join(shown),
                            column.label,
                            table.metric(row, column),
                            number(stat.mean * 100) if kind == "mean" else "",
                            number(stat.std * 100),
                            number(stat.var * 1e4),
                            stat.n,
                            stat.n_undefined,
                            number(value),
                            "percent (var: percent²)",
                        ]
                    )
                out.rows.append(cells)
    out.empty = all(row[len(table.row_header)] == "0" for row in out.rows)
    _paper_notes(out, records, table, stand_ins, pooled)
    undefined_note(out)
    return out


def _percent_text(stat: Stat, kind: str) -> str:
    """Our value in percent: mean ± std, or the std alone, or the variance in %²."""
    if kind == "mean":
        return stat.text(scale=100.0)
    if stat.n < 2:
        return "-" if stat.n == 0 else "n<2"
    value = stat.std * 100 if kind == "std" else stat.var * 1e4
    return f"{value:.2f}"


def _paper_notes(
    out: Table,
    records: Sequence[CellRecord],
    table: PaperTable,
    stand_ins: Mapping[str, set[str]],
    pooled: set[str],
) -> None:
    """Explain units, stand-in data sets, missing metrics and pooled settings."""
    experiments = sorted({r.experiment for r in records})
    out.notes.append(
        "ours: mean ± sample std (ddof=1) over n repeats/seeds, in percent; paper: as published"
        + (f". Experiments: {', '.join(experiments)}." if experiments else ".")
    )
    for dataset, ours in stand_ins.items():
        others = sorted(o for o in ours if o != dataset)
        if others:
            out.notes.append(
                f"ours on {', '.join(others)}; the paper's numbers are for "
                f"{DATA_LABELS.get(dataset, dataset)}."
            )
    orphans = sorted({data_name(r) for r in records if paper_dataset(r, table) is None})
    if orphans:
        names = ", ".join(DATA_LABELS.get(d, d) for d in table.datasets)
        out.notes.append(
            f"cells on {', '.join(orphans)} left out: no paper data set ({names}) to stand for; "
            'name one with [paper] data = "..." in the config.'
        )
    have = set(available_metrics(records))
    missing = [m for m in table.metrics() if m not in have]
    if missing:
        known = ", ".join(sorted(have)) or "none"
        out.notes.append(
            f"metrics missing from the store: {', '.join(missing)} (available: {known})"
        )
    if pooled:
        out.notes.append(
            "cells pooled over settings the table does not separate: " + ", ".join(sorted(pooled))
        )
    out.notes.extend(table.notes)


def default_tables(records: Sequence[CellRecord]) -> list[Table]:
    """What ``poisonlab table RUNS`` shows without a layout: each paper table that experiments
    reproduce (their cells together, split by experiment where they overlap), then per experiment
    without a paper table a generic table over its grid axes and all of its metrics."""
    tables: list[Table] = []
    for name in sorted({r.paper_table for r in records if r.paper_table}):
        cells = [r for r in records if r.paper_table == name]
        tables.append(paper_style_table(cells, name))
    rest = [r for r in records if not r.paper_table]
    for experiment in sorted({r.experiment for r in rest}):
        mine = [r for r in rest if r.experiment == experiment]
        tables.append(
            generic_table(
                mine,
                rows=varying_paths(mine),
                values=available_metrics(mine),
                name=f"{experiment}_table",
                title=f"{experiment}: every metric by grid setting",
            )
        )
    return tables
