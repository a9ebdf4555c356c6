"""The seed papers' published result tables, transcribed from METHODS.md §9, as data.

Why here: ``poisonlab table`` prints our measurements beside these numbers, so each table also says
which of *our* cells and metrics a paper cell corresponds to. A paper cell is found in the store by

- the table's row: ``select`` (parameter path → value, e.g. ``attack.target_rate = 0.33``) and/or
  a ``metric`` (seed 002 rows name a model), plus the paper's data set;
- the table's column: ``select`` (seed 002 columns are poison rates) and/or a ``metric`` (seed 004
  columns are detector metrics).

Exactly one of row and column names the metric. Parameter paths are dotted paths into a cell's
params (:func:`poisonlab.reports.records.param_value`); ``defenses.<name>.<key>`` reads the
keyword of the defense called ``<name>``. Metric names follow :mod:`poisonlab.experiments.tasks_base`.

Units: the papers print percent; values here are stored **exactly as printed** (percent, ``None``
for the papers' "-"), and :meth:`PaperTable.fraction` converts to our fractions in [0, 1]. Seed
004 Table 5 prints a spread row labelled σ² whose text calls it a standard deviation; its rows
carry ``stat="spread"`` and reports show our std and our variance beside it (METHODS §9).

Seed 000 has no result table (its report is plots: likelihood histograms, ROC of the filter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from poisonlab.errors import ConfigError

AC = "defense.activation-clustering"
HC = "defense.heatmap-clustering"
RAW = "defense.raw-clustering"
SEED002_MODELS = {"DNN": "dnn-uncertainty", "DF": "deep-features", "BNN": "bnn"}
"""Seed 002 model names → our defense (detector) names, for AUPR / AUROC."""
SEED002_ACCURACY = {"DNN": "dnn", "DF": "df", "BNN": "bnn"}
"""Seed 002 model names → the ``<model>`` part of ``accuracy.<model>.<set>``."""
SEED002_SETS = {"clean": "clean", "poisoned": "triggered"}
"""Seed 002 Table 1 "Data" suffix → the ``<set>`` part of ``accuracy.<model>.<set>``."""


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
    ``stat`` is ``"mean"`` for an ordinary row and ``"spread"`` for seed 004 Table 5's σ² row.
    """

    labels: tuple[str, ...]
    values: tuple[float | None, ...]
    dataset: str
    select: Mapping[str, Any] = field(default_factory=dict)
    metric: str | None = None
    stat: str = "mean"


@dataclass(frozen=True)
class PaperTable:
    """A published table with the mapping of each cell onto our parameters and metrics."""

    name: str
    source: str
    caption: str
    row_header: tuple[str, ...]
    columns: tuple[PaperColumn, ...]
    rows: tuple[PaperRow, ...]
    notes: tuple[str, ...] = ()

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


def _detector_columns(attack_metric: str | None, attack_label: str) -> tuple[PaperColumn, ...]:
    """Seed 004's columns: an attack metric, then ACC/TPR/TNR of AC and of HC."""
    columns = [PaperColumn(attack_label, attack_metric)] if attack_metric else []
    for short, prefix in (("AC", AC), ("HC", HC)):
        for stat, key in (("ACC", "acc"), ("TPR", "tpr"), ("TNR", "tnr")):
            columns.append(PaperColumn(f"{short} {stat}", f"{prefix}.{key}"))
    return tuple(columns)


def _rate_columns(rates: Sequence[int]) -> tuple[PaperColumn, ...]:
    """Seed 002's columns: the poison rate in percent → ``attack.rate`` as a fraction."""
    return tuple(PaperColumn(f"{p}%", select={"attack.rate": p / 100}) for p in rates)


def _seed002_table1() -> PaperTable:
    n = None
    published = {
        ("MNIST", "clean"): {
            "DNN": (99.21, 99.28, 99.26, 99.35, 99.32, 99.24),
            "DF": (n, 99.04, 98.74, 98.94, 99.04, 98.97),
            "BNN": (n, 99.56, 99.64, 99.56, 99.51, 99.5),
        },
        ("MNIST", "poisoned"): {
            "DNN": (n, 98.78, 98.87, 99.16, 99.12, 99.29),
            "DF": (n, 35.54, 17.55, 11.87, 7.32, 20.54),
            "BNN": (n, 99.54, 99.44, 99.5, 99.59, 99.43),
        },
        ("CIFAR10", "clean"): {
            "DNN": (88.9, 88.36, 88.23, 87.39, 87.87, 88.74),
            "DF": (n, 88.16, 88.32, 88.20, 88.95, 88.26),
            "BNN": (n, 89.48, 89.63, 89.80, 90.00, 90.05),
        },
        ("CIFAR10", "poisoned"): {
            "DNN": (n, 84.08, 81.95, 86.4, 86.94, 88.29),
            "DF": (n, 69.66, 64.37, 75.00, 75.86, 80.52),
            "BNN": (n, 88.30, 88.96, 88.82, 90.02, 90.05),
        },
    }
    rows = tuple(
        PaperRow(
            labels=(f"{data} {part}", model),
            values=values,
            dataset=data.lower(),
            metric=f"accuracy.{SEED002_ACCURACY[model]}.{SEED002_SETS[part]}",
        )
        for (data, part), models in published.items()
        for model, values in models.items()
    )
    return PaperTable(
        name="seed002-table1",
        source="seed 002, Table 1",
        caption="BadNets all-to-all: classification accuracy (%) on clean and on triggered test "
        'data ("poisoned" = prediction equals the backdoor label (y+1) mod K)',
        row_header=("Data", "Model"),
        columns=_rate_columns((0, 10, 20, 30, 40, 50)),
        rows=rows,
        notes=(
            "Poison rate = attack.rate, the fraction of the poisoned training set (seed 002 does "
            "not say whether % means |BD|/|train| or |BD|/|clean|).",
            "DNN = the plain network, DF = DeepFeatures on it, BNN = the Bayesian network.",
        ),
    )


def _seed002_detection(number: int, metric: str, title: str, published: dict) -> PaperTable:
    rows = tuple(
        PaperRow(
            labels=(data, model),
            values=values,
            dataset=data.lower(),
            metric=f"defense.{SEED002_MODELS[model]}.{metric}",
        )
        for data, models in published.items()
        for model, values in models.items()
    )
    return PaperTable(
        name=f"seed002-table{number}",
        source=f"seed 002, Table {number}" + (" (App. A.2)" if number == 3 else ""),
        caption=f"BadNets all-to-all: {title} (%), clean vs poisoned training samples",
        row_header=("Data", "Model"),
        columns=_rate_columns((10, 20, 30, 40, 50)),
        rows=rows,
        notes=(
            "DNN = dnn-uncertainty, DF = deep-features, BNN = bnn (BALD); positive = poisoned.",
            "Poison rate = attack.rate, the fraction of the poisoned training set.",
            f"Ours score the poisoned training set (D_train^BD, defense.*.{metric}); the held-out "
            f"protocol (D_val^BD) is val.<dnn|df|bnn>.{metric}: poisonlab table RUNS --rows "
            f"data.source,attack.rate --values 'val.*.{metric}'.",
        ),
    )


def _seed002_table2() -> PaperTable:
    published = {
        "MNIST": {
            "DNN": (83.18, 81.58, 68.30, 54.31, 53.14),
            "DF": (99.43, 99.70, 99.91, 99.96, 99.96),
            "BNN": (97.47, 86.24, 72.90, 58.46, 46.46),
        },
        "CIFAR10": {
            "DNN": (40.62, 64.16, 36.39, 38.68, 41.99),
            "DF": (91.87, 74.58, 90.94, 91.81, 85.17),
            "BNN": (92.24, 82.03, 70.95, 58.89, 49.22),
        },
    }
    return _seed002_detection(2, "aupr", "AUPR", published)


def _seed002_table3() -> PaperTable:
    published = {
        "MNIST": {
            "DNN": (83.60, 83.31, 73.41, 57.65, 51.66),
            "DF": (99.67, 99.83, 99.96, 99.98, 99.98),
            "BNN": (83.22, 69.94, 61.91, 55.75, 51.55),
        },
        "CIFAR10": {
            "DNN": (53.95, 71.24, 51.09, 51.02, 55.09),
            "DF": (95.75, 85.09, 95.57, 95.78, 91.96),
            "BNN": (58.64, 55.23, 53.03, 50.34, 50.13),
        },
    }
    return _seed002_detection(3, "auroc", "AUROC", published)


def _rate_rows(published: Mapping[int, tuple[float, ...]], key: str) -> tuple[PaperRow, ...]:
    """Seed 004 rows keyed by a percentage ``p`` → ``attack.<key>`` = p / 100."""
    return tuple(
        PaperRow(labels=(str(p),), values=v, dataset="gtsrb", select={f"attack.{key}": p / 100})
        for p, v in published.items()
    )


SEED004_NOTES = (
    "GTSRB, source class 2 → target class 5, 3×3 sticker; detector rates over the analysed "
    "(target) class, positive = poisoned, predicted positive = the smaller cluster.",
    "p = attack.target_rate, the poisoned fraction of the target class.",
)


def _seed004_table1() -> PaperTable:
    published = {
        33: (100, 94.76, 90.77, 96.73, 99.96, 99.88, 100.00),
        15: (100, 76.51, 99.31, 72.48, 100.00, 100.00, 100.00),
        10: (100, 87.62, 96.17, 86.17, 99.29, 92.9, 100.00),
        5: (100, 57.92, 20.69, 59.88, 99.48, 90.8, 99.94),
        2: (100, 52.91, 0.0, 54.0, 52.85, 0.0, 53.94),
    }
    return PaperTable(
        name="seed004-table1",
        source="seed 004, Table 1",
        caption="Standard (BadNets) attack, s = 3: ASR and AC vs HC detection (%)",
        row_header=("p (%)",),
        columns=_detector_columns("attack.asr", "ASR"),
        rows=_rate_rows(published, "target_rate"),
        notes=SEED004_NOTES,
    )


def _seed004_table2() -> PaperTable:
    published = {
        33: (90.98, 99.09, 97.24, 100.0, 99.58, 98.71, 100.0),
        15: (83.15, 96.42, 89.15, 100.0, 98.91, 96.69, 100.0),
        10: (90.45, 98.97, 89.7, 100.0, 99.82, 98.18, 100.00),
        5: (84.77, 99.09, 84.15, 99.87, 99.82, 96.34, 100.00),
        2: (83.51, 56.3, 100.00, 55.41, 55.33, 100.00, 54.42),
    }
    return PaperTable(
        name="seed004-table2",
        source="seed 004, Table 2",
        caption="Label-consistent attack, yellow-green sticker, s = 3: MASR and AC vs HC (%)",
        row_header=("p (%)",),
        columns=_detector_columns("attack.masr", "MASR"),
        rows=_rate_rows(published, "target_rate"),
        notes=SEED004_NOTES,
    )


def _seed004_table3() -> PaperTable:
    columns = tuple(
        PaperColumn(stat, f"{RAW}.{key}")
        for stat, key in (("ACC", "acc"), ("TPR", "tpr"), ("TNR", "tnr"))
    )
    rows = (
        PaperRow(
            ("PCA",), (65.49, 51.54, 72.36), "gtsrb", {"defenses.raw-clustering.reduce": "pca"}
        ),
        PaperRow(
            ("FastICA",),
            (63.13, 31.99, 78.48),
            "gtsrb",
            {"defenses.raw-clustering.reduce": "fastica"},
        ),
    )
    return PaperTable(
        name="seed004-table3",
        source="seed 004, Table 3",
        caption="k-means on raw images (raw-clustering), standard attack, 33%, s = 3 (%)",
        row_header=("Reduction",),
        columns=columns,
        rows=rows,
        notes=(
            "Reduction = the reduce keyword of the raw-clustering defense.",
            *SEED004_NOTES,
        ),
    )


def _seed004_table4() -> PaperTable:
    published = {
        128: (99.18, 99.45, 98.35, 100.0, 99.7, 99.08, 100.0),
        64: (77.97, 92.06, 90.44, 92.86, 90.79, 74.08, 99.01),
        32: (25.65, 78.97, 74.26, 81.28, 81.58, 58.46, 92.95),
    }
    rows = tuple(
        PaperRow((str(a),), v, "gtsrb", {"attack.amplitude": a}) for a, v in published.items()
    )
    return PaperTable(
        name="seed004-table4",
        source="seed 004, Table 4",
        caption="Label-consistent attack with a reduced-amplitude 3×3 sticker, 33% (%)",
        row_header=("amp (0–255)",),
        columns=_detector_columns("attack.masr", "MASR"),
        rows=rows,
        notes=(
            "amp = attack.amplitude on the 0–255 scale (training poisons only; test triggers are "
            "full amplitude). The text says {256, 128, 64}, the table {128, 64, 32}.",
            *SEED004_NOTES,
        ),
    )


def _seed004_table5() -> PaperTable:
    published = {
        (33, "mean"): (90.36, 94.41, 87.16, 99.82, 99.46, 100.00),
        (33, "σ²"): (6.81, 2.98, 9.96, 0.19, 0.58, 0.00),
        (15, "mean"): (85.24, 96.56, 83.24, 99.89, 99.32, 99.98),
        (15, "σ²"): (10.75, 1.98, 12.88, 0.17, 1.17, 0.024),
    }
    rows = tuple(
        PaperRow(
            labels=(str(p), stat),
            values=v,
            dataset="gtsrb",
            select={"attack.target_rate": p / 100},
            stat="mean" if stat == "mean" else "spread",
        )
        for (p, stat), v in published.items()
    )
    return PaperTable(
        name="seed004-table5",
        source="seed 004, Table 5",
        caption="Label-consistent attack, standard sticker, s = 3: 10 runs with varied trigger "
        "position and poison choice, mean and spread (%)",
        row_header=("p (%)", "stat"),
        columns=_detector_columns(None, ""),
        rows=rows,
        notes=(
            "The paper labels its spread row σ² but its text calls it a standard deviation: "
            "we show our std and our variance (in %²) beside it.",
            *SEED004_NOTES,
        ),
    )


PAPER_TABLES: dict[str, PaperTable] = {
    t.name: t
    for t in (
        _seed002_table1(),
        _seed002_table2(),
        _seed002_table3(),
        _seed004_table1(),
        _seed004_table2(),
        _seed004_table3(),
        _seed004_table4(),
        _seed004_table5(),
    )
}
"""Every transcribed table by name (``seed002-table1`` ... ``seed004-table5``)."""


def paper_table(name: str) -> PaperTable:
    """The table called ``name``; ConfigError listing the names otherwise."""
    try:
        return PAPER_TABLES[name]
    except KeyError:
        choices = ", ".join(PAPER_TABLES)
        raise ConfigError(f"no published table {name!r} (choose one of: {choices})") from None
