"""`poisonlab table RUNS`: experiment results as paper-style or custom tables (rich, Markdown, CSV).

A thin shell over :mod:`poisonlab.reports.tables`: it reads the finished cells from
``RUNS/results.sqlite``, picks the layout (the paper tables the experiments reproduce, one named
with ``--like``, or ``--rows/--cols/--values``), prints each table and writes ``<name>.md`` and
``<name>.csv`` into ``--out`` (default ``RUNS/tables``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from poisonlab.cli.common import QUIET, THREADS, VERBOSE, check_threads, use_threads
from poisonlab.cli.console import configure, err, out, user_errors
from poisonlab.cli.main import app
from poisonlab.errors import ConfigError
from poisonlab.ranges import counted
from poisonlab.reports.paper_tables import PAPER_TABLES, paper_table
from poisonlab.reports.records import available_metrics, load_records, store_path, varying_paths

if TYPE_CHECKING:  # the table modules import NumPy: loaded when a table is built
    from poisonlab.reports.records import CellRecord
    from poisonlab.reports.tables import Table


def _split(text: str | None) -> list[str]:
    """``"a,b"`` → ["a", "b"] (empty items dropped)."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def build_tables(
    records: list[CellRecord],
    *,
    like: str | None,
    rows: str | None,
    cols: str | None,
    values: str | None,
    experiment: str | None,
) -> list[Table]:
    """The tables ``poisonlab table`` shows for these options (see the command's help)."""
    from poisonlab.reports.compare import default_tables, paper_style_table
    from poisonlab.reports.tables import generic_table

    custom = rows is not None or cols is not None or values is not None
    if like and custom:
        raise ConfigError("--like takes no --rows/--cols/--values: choose one layout")
    stem = experiment or "all"
    if like:
        table = paper_table(like)
        return [paper_style_table(records, table, name=f"{stem}_{table.name}")]
    if custom:
        metrics = _split(values) or available_metrics(records)
        row_keys = _split(rows) if rows is not None else varying_paths(records, ignore=[cols or ""])
        title = f"{stem}: " + ", ".join(metrics[:4]) + (" ..." if len(metrics) > 4 else "")
        return [
            generic_table(
                records,
                rows=row_keys,
                cols=cols,
                values=metrics,
                name=f"{stem}_custom",
                title=title,
            )
        ]
    return default_tables(records)


@app.command("table")
@user_errors
def table_command(
    runs: Path = typer.Argument(
        ..., metavar="RUNS", help="Runs folder holding results.sqlite (from `poisonlab run`)."
    ),
    experiment: str | None = typer.Option(
        None, "--experiment", "-e", help="Only this experiment's cells (default: every experiment)."
    ),
    like: str | None = typer.Option(
        None, "--like", help=f"Lay the cells out as a published table: {', '.join(PAPER_TABLES)}."
    ),
    rows: str | None = typer.Option(
        None,
        "--rows",
        help="Parameter path(s) for the rows, comma-separated, e.g. attack.rate or "
        "data.source,attack.target_rate (default: the grid axes).",
    ),
    cols: str | None = typer.Option(
        None, "--cols", help="One parameter path whose values become column groups."
    ),
    values: str | None = typer.Option(
        None,
        "--values",
        help="Metric name(s) or patterns, comma-separated, e.g. attack.asr,defense.*.auroc "
        "(default: every metric).",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for the .md and .csv files (default: RUNS/tables)."
    ),
    threads: int | None = THREADS,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Print experiment results as tables; write each as Markdown and CSV.

    Without a layout option every published table an experiment reproduces (its config's \\[paper] table) is shown with our numbers beside the paper's: ours as mean ± sample std over repeats and seeds, in percent like the papers, with n; other experiments get a table of every metric by grid setting. The spread row of Schulth et al. 2022 (arXiv:2204.12848) Table 5 (labelled σ² there) is compared with both our std and our variance.

    The CSV files are long-format: one line per row × column with mean, std, var, n, the paper's value and the unit.

    Examples:

        poisonlab table runs

        poisonlab table runs --like seed002-table2 --experiment seed002

        poisonlab table runs --rows attack.target_rate \\
            --values 'defense.*.tpr,defense.*.tnr'

        poisonlab table runs --rows data.source --cols attack.rate \\
            --values val.bnn.aupr
    """
    configure(quiet=quiet, verbose=verbose)
    check_threads(threads)
    use_threads(threads)
    from poisonlab.reports.writers import to_rich, write_tables

    records = load_records(runs, experiment)
    if not records:
        where = f"of experiment {experiment!r} " if experiment else ""
        raise ConfigError(
            f"no finished cells {where}in {store_path(runs)}; run `poisonlab run CONFIG --runs "
            f"{runs}` first (`poisonlab run` shows failed cells)"
        )
    tables = build_tables(
        records, like=like, rows=rows, cols=cols, values=values, experiment=experiment
    )
    target = out_dir if out_dir is not None else Path(runs) / "tables"
    for table in tables:
        out.print(to_rich(table))
        if table.empty:
            known = ", ".join(available_metrics(records))
            err.print(
                f"[yellow]{table.name}: no finished cell matches this table's rows, columns and "
                f"metrics; only the paper's numbers are shown (available metrics: {known})[/]",
                highlight=False,
            )
    written = write_tables(tables, target)
    err.print(f"wrote {counted(len(written), 'file')} to {target}", highlight=False)
