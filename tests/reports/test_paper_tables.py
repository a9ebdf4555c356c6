"""The published tables: complete shapes, values checked against METHODS.md §9, and the mapping
of every paper cell onto our parameters and metric names."""

from __future__ import annotations

import re

import pytest

from poisonlab.defenses import detector_names
from poisonlab.errors import ConfigError
from poisonlab.reports.paper_tables import (
    PAPER_TABLES,
    PaperColumn,
    PaperRow,
    PaperTable,
    paper_table,
)

# name → (rows, columns): the shapes of METHODS.md §9
SHAPES = {
    "seed002-table1": (12, 6),
    "seed002-table2": (6, 5),
    "seed002-table3": (6, 5),
    "seed004-table1": (5, 7),
    "seed004-table2": (5, 7),
    "seed004-table3": (2, 3),
    "seed004-table4": (3, 7),
    "seed004-table5": (4, 6),
}

# (table, row labels, column, value as printed in METHODS.md §9)
SPOT_CHECKS = [
    ("seed002-table1", ("MNIST clean", "DNN"), "0%", 99.21),
    ("seed002-table1", ("MNIST clean", "DF"), "0%", None),
    ("seed002-table1", ("MNIST poisoned", "DF"), "30%", 11.87),
    ("seed002-table1", ("CIFAR10 clean", "DNN"), "0%", 88.9),
    ("seed002-table1", ("CIFAR10 poisoned", "BNN"), "50%", 90.05),
    ("seed002-table2", ("MNIST", "BNN"), "10%", 97.47),
    ("seed002-table2", ("CIFAR10", "DF"), "20%", 74.58),
    ("seed002-table2", ("CIFAR10", "DNN"), "50%", 41.99),
    ("seed002-table3", ("MNIST", "BNN"), "50%", 51.55),
    ("seed002-table3", ("CIFAR10", "DF"), "10%", 95.75),
    ("seed004-table1", ("33",), "AC ACC", 94.76),
    ("seed004-table1", ("5",), "HC TPR", 90.8),
    ("seed004-table1", ("2",), "AC TPR", 0.0),
    ("seed004-table2", ("2",), "AC TPR", 100.0),
    ("seed004-table2", ("15",), "MASR", 83.15),
    ("seed004-table3", ("PCA",), "ACC", 65.49),
    ("seed004-table3", ("FastICA",), "TPR", 31.99),
    ("seed004-table4", ("64",), "HC TPR", 74.08),
    ("seed004-table4", ("32",), "MASR", 25.65),
    ("seed004-table5", ("33", "mean"), "AC TNR", 87.16),
    ("seed004-table5", ("15", "σ²"), "HC TNR", 0.024),
    ("seed004-table5", ("15", "σ²"), "AC ACC", 10.75),
]

METRIC = re.compile(
    r"^(attack\.(asr|masr)"
    r"|defense\.[a-z-]+\.(acc|tpr|tnr|aupr|auroc)"
    r"|accuracy\.(dnn|df|bnn)\.(clean|triggered))$"
)


def test_every_table_is_there_with_its_shape():
    assert set(PAPER_TABLES) == set(SHAPES)
    for name, (n_rows, n_cols) in SHAPES.items():
        table = PAPER_TABLES[name]
        assert (len(table.rows), len(table.columns)) == (n_rows, n_cols), name
        assert all(len(row.values) == n_cols for row in table.rows)


@pytest.mark.parametrize(("name", "row", "column", "value"), SPOT_CHECKS)
def test_values_match_methods_section_9(name, row, column, value):
    table = paper_table(name)
    assert table.value(row, column) == value
    assert table.fraction(row, column) == (None if value is None else pytest.approx(value / 100))


def test_seed002_table1_has_zero_percent_values_only_for_clean_dnn():
    table = paper_table("seed002-table1")
    zero = [row.values[0] is not None for row in table.rows]
    assert zero == [
        row.labels == (row.labels[0], "DNN") and "clean" in row.labels[0] for row in table.rows
    ]
    assert all(v is not None for row in table.rows for v in row.values[1:])


def test_row_and_column_mapping_onto_our_names():
    t1 = paper_table("seed002-table1")
    row, col = t1.row("MNIST poisoned", "BNN"), t1.columns[3]
    assert t1.metric(row, col) == "accuracy.bnn.triggered"
    assert t1.selection(row, col) == {"attack.rate": pytest.approx(0.3)}
    assert t1.metric(t1.row("CIFAR10 clean", "DF"), col) == "accuracy.df.clean"
    assert t1.row("CIFAR10 clean", "DF").dataset == "cifar10"

    t2, t3 = paper_table("seed002-table2"), paper_table("seed002-table3")
    assert t2.metric(t2.row("MNIST", "DNN"), t2.columns[0]) == "defense.dnn-uncertainty.aupr"
    assert t2.metric(t2.row("MNIST", "DF"), t2.columns[0]) == "defense.deep-features.aupr"
    assert t3.metric(t3.row("CIFAR10", "BNN"), t3.columns[4]) == "defense.bnn.auroc"
    assert t3.selection(t3.row("CIFAR10", "BNN"), t3.columns[4]) == {"attack.rate": 0.5}

    s1 = paper_table("seed004-table1")
    row = s1.row("10")
    assert [s1.metric(row, c) for c in s1.columns] == [
        "attack.asr",
        "defense.activation-clustering.acc",
        "defense.activation-clustering.tpr",
        "defense.activation-clustering.tnr",
        "defense.heatmap-clustering.acc",
        "defense.heatmap-clustering.tpr",
        "defense.heatmap-clustering.tnr",
    ]
    assert s1.selection(row, s1.columns[0]) == {"attack.target_rate": 0.1}
    assert paper_table("seed004-table2").metric(row, paper_table("seed004-table2").columns[0]) == (
        "attack.masr"
    )
    s3 = paper_table("seed004-table3")
    assert s3.selection(s3.row("FastICA"), s3.columns[0]) == {
        "defenses.raw-clustering.reduce": "fastica"
    }
    assert s3.metric(s3.row("PCA"), s3.columns[1]) == "defense.raw-clustering.tpr"
    s4 = paper_table("seed004-table4")
    assert s4.selection(s4.row("32"), s4.columns[0]) == {"attack.amplitude": 32}
    s5 = paper_table("seed004-table5")
    assert [r.stat for r in s5.rows] == ["mean", "spread", "mean", "spread"]
    assert {
        r.dataset for t in ("seed004-table1", "seed004-table5") for r in PAPER_TABLES[t].rows
    } == {"gtsrb"}


def test_every_metric_follows_the_naming_convention():
    for table in PAPER_TABLES.values():
        for name in table.metrics():
            assert METRIC.match(name), (table.name, name)


@pytest.mark.parametrize(
    "defense",
    sorted(
        {
            m.split(".")[1]
            for t in PAPER_TABLES.values()
            for m in t.metrics()
            if m.startswith("defense.")
        }
    ),
)
def test_defense_names_are_registry_names(defense):
    if defense == "heatmap-clustering" and defense not in detector_names():
        pytest.skip("heatmap-clustering is not registered yet (issue 5)")
    assert defense in detector_names()


def test_unknown_table_lists_the_names():
    with pytest.raises(ConfigError, match="seed004-table5"):
        paper_table("seed003-table1")


def test_a_cell_must_name_exactly_one_metric():
    with pytest.raises(ValueError, match="exactly one metric"):
        PaperTable(
            "x", "x", "x", ("r",), (PaperColumn("c", "attack.asr"),),
            (PaperRow(("a",), (1.0,), "mnist", metric="attack.masr"),),
        )  # fmt: skip
    with pytest.raises(ValueError, match="does not fit"):
        PaperTable(
            "x", "x", "x", ("r",), (PaperColumn("c", "attack.asr"),),
            (PaperRow(("a",), (1.0, 2.0), "mnist"),),
        )  # fmt: skip
