"""The published tables: complete shapes, values as printed in the papers, each table's citation,
the mapping of every paper cell onto our parameters and metric names, and the loader's errors.

The tables come from Subedar et al. 2019 (arXiv:1912.01206) and Schulth, Berghoff, Neu 2022
(arXiv:2204.12848); see docs/methods.md#published-tables."""

from __future__ import annotations

import re

import pytest

from poisonlab.defenses import detector_names
from poisonlab.errors import ConfigError
from poisonlab.reports.paper_tables import (
    PAPER_TABLES,
    Citation,
    PaperColumn,
    PaperRow,
    PaperTable,
    load_paper_tables,
    paper_table,
)

# name → (rows, columns): the shapes of the published tables
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

# (table, row labels, column, value as printed in the paper)
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
def test_values_match_the_papers(name, row, column, value):
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


# name prefix → (arXiv id, first author's surname, year) of the paper its tables come from
PAPERS = {"seed002": ("1912.01206", "Subedar", 2019), "seed004": ("2204.12848", "Schulth", 2022)}


def test_every_table_carries_its_papers_citation():
    for name, table in PAPER_TABLES.items():
        arxiv, surname, year = PAPERS[name.split("-")[0]]
        paper = table.paper
        assert isinstance(paper, Citation), name
        assert (paper.arxiv, paper.authors[0].split()[-1], paper.year) == (arxiv, surname, year)
        assert paper.title and len(paper.authors) >= 3
        number = name.rsplit("table", 1)[1]
        assert paper.table.startswith(f"Table {number}"), (name, paper.table)
        assert f"arXiv:{arxiv}" in str(paper) and paper.short == f"{surname} et al. {year}"


def test_the_citation_names_up_to_two_authors():
    one = Citation(("Ada Lovelace",), 1843, "Notes", "1234.56789", "Table 1")
    two = Citation(("A. Turing", "A. Church"), 1936, "On", "1234.5678", "Table 2")
    assert (one.short, two.short) == ("Lovelace 1843", "Turing and Church 1936")


def test_the_packaged_file_is_what_the_module_loaded(tmp_path):
    again = load_paper_tables()
    assert list(again) == list(PAPER_TABLES)
    assert again == PAPER_TABLES  # frozen dataclasses compare by value
    copy = tmp_path / "tables.toml"
    copy.write_text(_packaged_text(), encoding="utf-8")
    assert load_paper_tables(copy) == PAPER_TABLES


def _packaged_text() -> str:
    from importlib import resources

    return resources.files("poisonlab.reports").joinpath("paper_tables.toml").read_text("utf-8")


ONE_TABLE = """
[[table]]
name = "x-table1"
paper.authors = ["A. One", "B. Two", "C. Three"]
paper.year = 2020
paper.title = "A Paper"
paper.arxiv = "2001.00001"
paper.table = "Table 1"
source = "x, Table 1"
caption = "a caption"
row_header = ["p (%)"]
columns = [{ label = "ASR", metric = "attack.asr" }]
rows = [{ labels = ["10"], dataset = "mnist", select = { "attack.rate" = 0.1 }, values = [99.5] }]
"""


def test_a_minimal_table_loads(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(ONE_TABLE.replace("[99.5]", '["-"]'), encoding="utf-8")
    table = load_paper_tables(path)["x-table1"]
    assert table.value(("10",), "ASR") is None and table.notes == ()
    assert table.selection(table.rows[0], table.columns[0]) == {"attack.rate": 0.1}
    assert table.paper == Citation(
        ("A. One", "B. Two", "C. Three"), 2020, "A Paper", "2001.00001", "Table 1"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("values = [99.5]", 'values = ["n/a"]'), r"x-table1\), rows\[0\]: values must be"),
        (("values = [99.5]", "values = [99.5, 1.0]"), r"x-table1\): x-table1: row .* does not fit"),
        (
            ('metric = "attack.asr"', 'metric = "attack.asr", colour = 1'),
            r"columns\[0\]: unknown key 'colour'",
        ),
        (('"2001.00001"', '"arXiv 2001"'), r"x-table1\), paper: arxiv must be an arXiv identifier"),
        (("paper.year = 2020", 'paper.year = "2020"'), r"paper: year must be an integer"),
        (
            ('dataset = "mnist",', 'dataset = "mnist", stat = "median",'),
            r"stat must be one of mean, spread",
        ),
        (
            ('{ label = "ASR", metric = "attack.asr" }', '{ label = "ASR" }'),
            r"must name exactly one metric",
        ),
        (("rows = [", "rowz = ["), r"unknown key 'rowz'"),
        (('caption = "a caption"', "caption = 3"), r"caption must be a non-empty string, got 3"),
    ],
)
def test_a_malformed_file_names_the_file_table_and_field(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    old, new = change
    assert old in ONE_TABLE
    path.write_text(ONE_TABLE.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        load_paper_tables(path)
    assert str(path) in str(caught.value)


def test_a_missing_broken_or_repeating_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_paper_tables(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[table]\nname = ", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml: not a valid TOML file"):
        load_paper_tables(broken)
    twice = tmp_path / "twice.toml"
    twice.write_text(ONE_TABLE + ONE_TABLE, encoding="utf-8")
    with pytest.raises(ConfigError, match="'x-table1' appears twice"):
        load_paper_tables(twice)
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="table must be a non-empty list of tables"):
        load_paper_tables(empty)
