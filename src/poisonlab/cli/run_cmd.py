"""`poisonlab run`: run an experiment config's grid of cells resumably, locally or on Ray."""

from __future__ import annotations

import math
import re
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from poisonlab import runtime
from poisonlab.cli.common import DEVICE, QUIET, THREADS, VERBOSE, check_device, check_threads
from poisonlab.cli.console import configure, err, out, user_errors
from poisonlab.cli.main import app
from poisonlab.errors import ConfigError
from poisonlab.ranges import counted

if TYPE_CHECKING:
    from poisonlab.experiments.runner import RunSummary

MAIN_METRICS = (
    "model.clean_accuracy",
    "attack.clean_accuracy",
    "attack.asr",
    "attack.success_rate",
    "defense.*.auroc",
    "defense.*.aupr",
)
MAX_METRIC_COLUMNS = 5


def main_metrics(metrics_per_cell: list[dict[str, float | int]]) -> list[str]:
    """The metric names worth a column: the headline ones first, at most MAX_METRIC_COLUMNS."""
    names = sorted({name for metrics in metrics_per_cell for name in metrics})
    chosen = [n for pattern in MAIN_METRICS for n in names if fnmatch(n, pattern)]
    chosen += [n for n in names if n not in chosen]
    return list(dict.fromkeys(chosen))[:MAX_METRIC_COLUMNS]


def _format(value: float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


STATUS_STYLE = {"done": "green", "failed": "red", "pending": "yellow", "running": "yellow"}


HEADER_WIDTH = 11
"""Metric column headers are stacked in lines of at most this many characters."""


def stacked_header(name: str, width: int = HEADER_WIDTH) -> str:
    """``defense.activation-clustering.auroc`` → ``defense.\\nactivation-\\nclustering.\\nauroc``:
    a metric name on short lines (broken after ``.``, ``-`` and ``_``), so five metric columns
    fit 80 columns."""
    pieces = re.findall(r"[^.\-_]+[.\-_]?", name)
    lines = [""]
    for piece in pieces:
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def print_summary(summary: RunSummary) -> None:
    """The cells table (status, seconds), a table of the main metrics per cell, failed cells'
    errors, and totals. Two narrow tables rather than one wide one, so a terminal of 80 columns
    shows every value uncut. Off a terminal (a log, CI), as in ``scan`` and ``demo``, each table
    row and each message stays on one line (:func:`~poisonlab.cli.scan_table.print_whole`)."""
    from rich.table import Table
    from rich.text import Text

    from poisonlab.cli.scan_table import print_whole

    wrap = not out.is_terminal  # a pipe or file: one line per message, the viewer wraps

    columns = main_metrics([cell.metrics for cell in summary.cells])
    table = Table(
        title=f"{summary.experiment}: {counted(len(summary.cells), 'cell')}", title_justify="left"
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("cell", overflow="fold", ratio=1)
    for name in ("key", "status", "seconds"):
        table.add_column(name, justify="right" if name == "seconds" else "left", no_wrap=True)
    for cell in summary.cells:
        status = cell.status if cell.ran else f"{cell.status} (earlier)"
        table.add_row(
            str(cell.index),
            Text(cell.description),
            cell.key[:8],
            Text(status, style=STATUS_STYLE.get(cell.status, "")),
            "" if cell.seconds is None else f"{cell.seconds:.1f}",
        )
    print_whole(out, table)
    if columns:
        values = Table(title="main metrics per cell", title_justify="left")
        values.add_column("#", justify="right", no_wrap=True)
        for name in columns:
            values.add_column(stacked_header(name), justify="right", no_wrap=True)
        for cell in summary.cells:
            values.add_row(str(cell.index), *[_format(cell.metrics.get(n)) for n in columns])
        print_whole(out, values)
        every = {name for cell in summary.cells for name in cell.metrics}
        if len(every) > len(columns):
            out.print(
                f"{len(every) - len(columns)} more metrics: poisonlab table {summary.runs_dir}",
                highlight=False,
                soft_wrap=wrap,
            )
    for cell in summary.cells:
        if cell.status == "failed":
            line = Text.assemble(("failed ", "red"), f"{cell.description} ({cell.key[:8]}): ")
            out.print(line + Text(cell.error_line), soft_wrap=True)
    out.print(
        f"{summary.count('done')} done ({summary.ran - summary.count('failed')} now), "
        f"{summary.count('failed')} failed, {summary.skipped} skipped, "
        f"{summary.count('pending')} pending in {summary.seconds:.1f} s; "
        f"results in {Path(summary.runs_dir) / 'results.sqlite'}",
        highlight=False,
        soft_wrap=wrap,
    )


@app.command("run")
@user_errors
def run_command(
    config_file: Path = typer.Argument(..., help="Experiment config (TOML).", metavar="CONFIG"),
    executor: str = typer.Option(
        "local", "--executor", "-e", help="local (this machine) or ray (a Ray cluster or runtime)."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        help="Cells at once. local (default 1): 1 runs in-process, N > 1 uses N processes; "
        "ray: default = cluster CPUs / --cpus-per-task.",
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (auto, ray://host:10001); default: local Ray."
    ),
    cpus_per_task: float = typer.Option(1.0, "--cpus-per-task", help="Ray CPUs per cell."),
    runs: Path = typer.Option(
        Path("runs"),
        "--runs",
        help="Runs folder: results.sqlite, cache/, one folder per experiment.",
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        metavar="<key=value>",
        help="Override a config key: section.key=value (TOML value). Repeatable.",
    ),
    only: str | None = typer.Option(
        None, "--only", help="Run only cells whose description or key contains this text."
    ),
    retry_failed: bool = typer.Option(
        True, "--retry-failed/--no-retry-failed", help="Re-run cells that failed before."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check every cell (its attack, defenses, sections and data source) and list the "
        "cells and their status; run nothing.",
    ),
    device: str = DEVICE,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Run every cell of an experiment grid, skipping cells already done.

    Results (metrics, timings, status, errors, package versions) go to RUNS/results.sqlite as each
    cell finishes, and each cell's artifacts to RUNS/<name>/<cell key>/. Run the same command again
    after a crash, a kill or Ctrl-C: finished cells are skipped, failed and interrupted ones re-run.

    Before anything runs, every cell is checked (its attack and defenses are built, its sections
    parsed, its data source looked up, unless the cells run on a remote Ray cluster) and every
    problem is listed; nothing runs if there is one.

    Any list in \\[data], \\[model], \\[train], \\[attack] or \\[task] is a grid axis (write a
    list-valued parameter as a list of lists: color = \\[\\[255, 0, 0]]). Exit status 1 if a cell
    failed, 130 on Ctrl-C, 143 when ended by SIGTERM (kill, a CI timeout).

    Examples:

        poisonlab run experiments/ci/subedar2019-table1-2-3.toml --dry-run

        poisonlab run experiments/subedar2019-table1-2-3.toml --workers 2 \\
            --set attack.rate=[0.1,0.3]

        poisonlab run experiments/schulth2022-table5.toml --executor ray \\
            --address auto --only seed=0
    """
    configure(quiet=quiet, verbose=verbose)
    check_threads(threads)
    check_device(device)
    if config_file.is_dir():  # load_config's messages, before torch loads
        raise ConfigError(f"config file {config_file} is a folder; expected a TOML file")
    if not config_file.is_file():
        raise ConfigError(f"config file {config_file} not found")
    from rich.table import Table
    from rich.text import Text

    from poisonlab.cli.scan_table import print_whole
    from poisonlab.experiments.config import load_config
    from poisonlab.experiments.executors import check_executor
    from poisonlab.experiments.runner import RunInterrupted, plan, run_experiment

    check_executor(executor, workers=workers, address=address)  # --dry-run checks them too

    # every cell is planned and every data source looked up before anything runs; all problems
    # are reported at once (data paths on a remote Ray cluster need not exist on this machine)
    local_data = executor == "local" or address is None
    config = load_config(config_file, overrides, check_data=local_data)
    if dry_run:
        planned = plan(config, runs, retry_failed=retry_failed, only=only)
        table = Table(
            title=f"{config.name} ({config.kind}): {counted(len(planned), 'cell')}",
            title_justify="left",
        )
        for name in ("#", "cell", "key", "status", "run"):
            table.add_column(name)
        for item in planned:
            table.add_row(
                str(item.cell.index),
                Text(item.cell.description),
                item.cell.spec.key[:8],
                Text(item.status, style=STATUS_STYLE.get(item.status, "")),
                "yes" if item.run else "no",
            )
        print_whole(out, table)
        out.print(f"{sum(p.run for p in planned)} of {counted(len(planned), 'cell')} would run")
        return
    try:
        summary = run_experiment(
            config,
            runs,
            executor=executor,
            workers=workers,
            address=address,
            retry_failed=retry_failed,
            only=only,
            device=device,
            cpus_per_task=cpus_per_task,
            # each cell's job carries the count and its label, wherever the cell runs
            threads=None if threads is None else runtime.parse_threads(threads),
            threads_source="--threads",
        )
    except RunInterrupted as exc:
        done = exc.summary.count("done")
        err.print(
            f"[yellow]interrupted[/]: {done} of {counted(len(exc.summary.cells), 'cell')} done and saved; "
            "running cells set back to pending. Run the same command again to resume.",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    print_summary(summary)
    if not summary.ok:
        raise typer.Exit(1)
