"""Tables from a real results store with hand-made cells: known means and spreads, the paper's
columns, Markdown and CSV content, parameter paths, and `poisonlab table` end to end."""

from __future__ import annotations

import csv
import io
import math

import pytest
from rich.console import Console
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.errors import ConfigError
from poisonlab.reports.compare import data_name, default_tables, paper_style_table
from poisonlab.reports.records import (
    MISSING,
    CellRecord,
    flatten_params,
    load_records,
    param_value,
    varying_paths,
)
from poisonlab.reports.tables import expand_metrics, generic_table, summarize, transposed
from poisonlab.reports.writers import to_csv, to_markdown, to_rich, write_tables
from tests.reports.conftest import add_experiment, backdoor_params

runner = CliRunner()


def record(params, metrics, experiment="e", table=None, **paper):
    paper = {"table": table, **paper} if table else paper
    return CellRecord(experiment, str(id(params)), params, metrics, paper=paper)


def csv_rows(table):
    return list(csv.DictReader(io.StringIO(to_csv(table))))


def test_summarize_uses_the_sample_std_and_sets_nan_apart():
    stat = summarize([0.1, 0.2, 0.3, float("nan")])
    assert stat.mean == pytest.approx(0.2)
    assert stat.std == pytest.approx(0.1)  # ddof = 1
    assert stat.var == pytest.approx(0.01)
    assert (stat.n, stat.n_undefined) == (3, 1)
    assert stat.text(scale=100) == "20.00 ± 10.00"
    one = summarize([0.5])
    assert one.n == 1 and math.isnan(one.std) and one.text() == "0.50"
    assert summarize([]).text() == "-"
    assert summarize([float("nan")]).text() == "undef."


def test_parameter_paths():
    params = backdoor_params(rate=0.1, seed=3)
    assert param_value(params, "attack.rate") == 0.1
    assert param_value(params, "seed") == 3
    assert param_value(params, "defenses.raw-clustering.reduce") == "pca"
    assert param_value(params, "defenses.spectral-signatures.x") is MISSING
    assert param_value(params, "attack.nope") is MISSING
    flat = flatten_params(params)
    assert flat["defenses.raw-clustering.reduce"] == "pca" and flat["data.source"] == "digits"
    other = backdoor_params(rate=0.2, seed=4)
    records = [record(params, {}), record(other, {})]
    assert varying_paths(records) == ["attack.rate"]  # seed is a repeat key, not an axis


@pytest.mark.parametrize(
    ("source", "name"),
    [("digits", "digits"), ("mnist:/data/mnist", "mnist"), ("/data/GTSRB", "gtsrb")],
)
def test_data_names(source, name):
    assert data_name(record({"data": {"source": source}}, {})) == name


def test_paper_style_table_from_the_store(runs):
    records = load_records(runs, "s002")
    assert len(records) == 6 and {r.paper_table for r in records} == {"seed002-table2"}
    table = paper_style_table(records, "seed002-table2")
    assert table.header[:5] == ["Data", "Model", "n", "10% ours", "10% paper"]
    rows = {tuple(r[:2]): r for r in table.rows}
    df = rows[("digits (paper: MNIST)", "DF")]
    assert df[2] == "3"
    assert df[3:7] == ["98.00 ± 1.00", "99.43", "98.00 ± 1.00", "99.7"]
    assert df[7:9] == ["-", "99.91"]  # no cells at 30%: ours empty, the paper's value stays
    assert rows[("digits (paper: MNIST)", "DNN")][3] == "81.00 ± 1.00"
    assert rows[("CIFAR10", "BNN")][2:5] == ["0", "-", "92.24"]
    assert any("ours on digits" in n and "MNIST" in n for n in table.notes)
    assert not table.empty
    line = next(
        r
        for r in csv_rows(table)
        if r["row"].endswith("DF") and r["column"] == "10%" and "digits" in r["row"]
    )
    assert line["metric"] == "defense.deep-features.aupr"
    assert float(line["mean"]) == pytest.approx(98.0)
    assert float(line["std"]) == pytest.approx(1.0)
    assert float(line["var"]) == pytest.approx(1.0)
    assert (line["n"], line["paper"]) == ("3", "99.43")


def test_table5_shows_our_std_and_variance_beside_the_papers_sigma():
    cells = [
        record(
            backdoor_params(target_rate=0.33, seed=s, data="gtsrb:/x"),
            {"defense.activation-clustering.acc": v},
            table="seed004-table5",
        )
        for s, v in enumerate([0.90, 0.92, 0.94])
    ]
    table = paper_style_table(cells, "seed004-table5")
    by_label = {tuple(r[:2]): r for r in table.rows}
    assert by_label[("33", "mean")][3:5] == ["92.00 ± 2.00", "90.36"]
    assert by_label[("33", "std (paper: σ²)")][3:5] == ["2.00", "6.81"]
    assert by_label[("33", "var %² (paper: σ²)")][3:5] == ["4.00", "6.81"]
    assert by_label[("15", "mean")][2:5] == ["0", "-", "85.24"]
    assert any("σ²" in n and "standard deviation" in n for n in table.notes)


def test_notes_name_missing_metrics_pooled_settings_and_undefined_values():
    cells = [
        record(backdoor_params(target_rate=0.33, seed=0), {"attack.asr": 1.0}),
        record({**backdoor_params(target_rate=0.33, seed=1), "model": {"arch": "resnet20"}},
               {"attack.asr": float("nan")}),
    ]  # fmt: skip
    table = paper_style_table(cells, "seed004-table1")
    notes = " ".join(table.notes)
    assert "defense.heatmap-clustering.tpr" in notes and "available: attack.asr" in notes
    assert "pooled" in notes and "model.arch" in notes
    assert "1 undefined (NaN)" in notes
    assert table.rows[0][1:4] == ["1", "100.00", "100"]


def test_two_experiments_filling_one_row_are_kept_apart():
    cells = [
        record(backdoor_params(rate=0.1, seed=s), {"defense.bnn.aupr": v}, experiment=e)
        for e, v in (("small", 0.5), ("full", 0.7))
        for s in (0, 1)
    ]
    table = paper_style_table(cells, "seed002-table2")
    labels = [r[0] for r in table.rows if r[1] == "BNN"]
    assert "digits (paper: MNIST) [small]" in labels and "digits (paper: MNIST) [full]" in labels


def test_generic_table_with_columns_and_patterns():
    cells = [
        record(
            backdoor_params(rate=r, seed=s),
            {"defense.a.auroc": r + s / 100, "defense.b.auroc": 0.5},
        )
        for r in (0.1, 0.2)
        for s in (0, 2)
    ]
    assert expand_metrics(["defense.*.auroc"], cells) == ["defense.a.auroc", "defense.b.auroc"]
    table = generic_table(
        cells, rows=["data.source"], cols="attack.rate", values=["defense.a.auroc"]
    )
    assert table.header == [
        "data.source", "n", "defense.a.auroc @ attack.rate=0.1", "defense.a.auroc @ attack.rate=0.2"
    ]  # fmt: skip
    assert table.rows == [["digits", "2", "0.1100 ± 0.0141", "0.2100 ± 0.0141"]]
    with pytest.raises(ConfigError, match=r"no metric 'nope'.*available: defense.a.auroc"):
        generic_table(cells, rows=["attack.rate"], values=["nope"])
    # a mistyped row or column path is named (it made a column of "-")
    with pytest.raises(ConfigError, match=r"no parameter 'attack.rte' .*did you mean attack.rate"):
        generic_table(cells, rows=["attack.rte"], values=["defense.a.auroc"])
    with pytest.raises(ConfigError, match=r"no parameter 'nope'.*vary between them: attack.rate"):
        generic_table(cells, rows=["data.source"], cols="nope", values=["defense.a.auroc"])


def test_markdown_and_csv_writers(runs, tmp_path):
    tables = default_tables(load_records(runs))
    assert [t.name for t in tables] == ["seed002-table2", "plain_table"]
    md = to_markdown(tables[0])
    assert md.startswith("### Subedar et al. 2019, Table 2")
    assert "| Data | Model | n | 10% ours | 10% paper |" in md
    assert "| digits (paper: MNIST) | DF | 3 | 98.00 ± 1.00 | 99.43 |" in md
    plain = to_markdown(tables[1])
    assert "| attack.target_rate |" not in plain  # not varying: not a row key
    assert "0.5500 ± 0.0707" in plain  # attack.asr over the two seeds
    written = write_tables(tables, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "plain_table.csv", "plain_table.md", "seed002-table2.csv", "seed002-table2.md"
    ]  # fmt: skip
    header = (tmp_path / "out" / "seed002-table2.csv").read_text().splitlines()[0]
    assert header == "row,column,metric,mean,std,var,n,n_undefined,paper,unit"


def test_cli_default_tables(runs):
    result = runner.invoke(app, ["table", str(runs)])
    assert result.exit_code == 0, result.output
    assert "ours" in result.output and "paper" in result.output
    assert "99.43" in result.output and "98.00" in result.output
    assert (runs / "tables" / "seed002-table2.md").is_file()
    assert (runs / "tables" / "plain_table.csv").is_file()


def test_cli_like_and_custom_layouts(runs, tmp_path):
    out = tmp_path / "t"
    result = runner.invoke(
        app, ["table", str(runs), "--like", "seed004-table1", "-e", "plain", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = (out / "plain_seed004-table1.md").read_text()
    assert "| 33 | 2 | 55.00 ± 7.07 | 100 |" in text
    result = runner.invoke(
        app, ["table", str(runs), "-e", "s002", "--rows", "attack.rate", "--values", "defense.*.aupr",
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    custom = (out / "s002_custom.md").read_text()
    assert "| attack.rate | n | defense.bnn.aupr |" in custom
    assert "| 0.1 | 3 | 0.9000 ± 0.0000 | 0.9800 ± 0.0100 | 0.8100 ± 0.0100 |" in custom


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--values", "nope"], "available: attack.asr"),
        (["--like", "seed009-table1"], "seed002-table1"),
        (["--like", "seed002-table1", "--rows", "seed"], "choose one layout"),
        (["-e", "missing"], "experiments: plain, s002"),
    ],
)
def test_cli_user_errors(runs, args, message):
    result = runner.invoke(app, ["table", str(runs), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_empty_or_absent_store(tmp_path):
    result = runner.invoke(app, ["table", str(tmp_path)])
    assert result.exit_code == 2 and "no results store" in result.output
    add_experiment(tmp_path, "failing", [(backdoor_params(rate=0.1), {})], status="failed")
    result = runner.invoke(app, ["table", str(tmp_path)])
    assert result.exit_code == 2 and "no finished cells" in result.output


def test_wide_tables_are_transposed_for_the_terminal():
    metrics = {f"defense.d{i}.auroc": 0.5 + i / 100 for i in range(8)}
    cells = [record(backdoor_params(rate=r, seed=0), metrics) for r in (0.1, 0.2)]
    wide = generic_table(cells, rows=["attack.rate"], values=["defense.*"])
    flipped = transposed(wide)
    assert flipped.header == ["metric", "attack.rate=0.1", "attack.rate=0.2"]
    assert flipped.rows[0] == ["n", "1", "1"]
    assert flipped.rows[1] == ["defense.d0.auroc", "0.5000", "0.5000"]
    assert len(flipped.rows) == 9
    rich = to_rich(wide)
    assert [c.header for c in rich.columns] == flipped.header


def test_counts_print_without_fixed_decimals():
    cells = [record(backdoor_params(rate=0.1, seed=s), {"attack.n_poison": n, "attack.asr": 1.0})
             for s, n in ((0, 7), (1, 12))]  # fmt: skip
    table = generic_table(cells, rows=[], values=["attack.n_poison", "attack.asr"])
    assert table.rows == [["all", "2", "9.5 ± 3.536", "1.0000 ± 0.0000"]]


def test_paper_data_key_and_stand_ins_choose_the_papers_rows():
    svhn = record(backdoor_params(rate=0.1, data="svhn:/x"), {"defense.bnn.aupr": 0.5},
                  table="seed002-table2", data="CIFAR10")  # fmt: skip
    fashion = record(backdoor_params(rate=0.1, data="fashion-mnist"), {"defense.bnn.aupr": 0.6})
    unknown = record(backdoor_params(rate=0.1, data="svhn:/x"), {"defense.bnn.aupr": 0.7})
    table = paper_style_table([svhn, fashion, unknown], "seed002-table2")
    by_label = {tuple(r[:2]): r[3] for r in table.rows}
    assert by_label[("svhn (paper: CIFAR10)", "BNN")] == "50.00"
    assert by_label[("fashion-mnist (paper: MNIST)", "BNN")] == "60.00"
    assert "70.00" not in by_label.values()  # no paper data set to stand for: left out, said so
    assert any(n.startswith("cells on svhn left out") for n in table.notes)
    console = Console(record=True, width=200)
    console.print(to_rich(table))
    assert '[paper] data = "..."' in console.export_text()  # notes are text, not rich markup


def test_one_cell_with_an_undefined_metric_counts_one_not_zero_to_one():
    """A one-cell experiment whose defense saw no poisons (AUROC undefined) showed ``n 0–1``."""
    one = [record(backdoor_params(rate=0.1, seed=0), {"attack.asr": 1.0, "d.auroc": math.nan})]
    table = generic_table(one, rows=[], values=["attack.asr", "d.auroc"])
    assert table.rows == [["all", "1", "1.0000", "undef."]]
    assert "1 undefined (NaN)" in " ".join(table.notes)
    # a range still says when the means stand on different counts
    three = [
        record(backdoor_params(rate=0.1, seed=s), {"attack.asr": 1.0, "d.auroc": auroc})
        for s, auroc in ((0, 0.5), (1, math.nan), (2, 0.7))
    ]
    table = generic_table(three, rows=[], values=["attack.asr", "d.auroc"])
    assert table.rows[0][:2] == ["all", "2–3"]
    undefined = [record(backdoor_params(rate=0.1, seed=0), {"d.auroc": math.nan})]
    assert generic_table(undefined, rows=[], values=["d.auroc"]).rows == [["all", "0", "undef."]]
