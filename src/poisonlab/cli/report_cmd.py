"""`poisonlab report RUN_DIR`: write RUN_DIR/report.html, one self-contained page of figures.

A thin shell over :func:`poisonlab.reports.html.write_report`, which recognises a scan output
folder, an experiment folder (``RUNS/<experiment>``) or one cell folder and shows whatever
artifacts exist, listing what is missing and why.
"""

from __future__ import annotations

from pathlib import Path

import typer

from poisonlab.cli.common import QUIET, THREADS, VERBOSE, check_threads, data_path, use_threads
from poisonlab.cli.console import configure, out, user_errors
from poisonlab.cli.main import app
from poisonlab.errors import ConfigError


@app.command("report")
@user_errors
def report_command(
    run_dir: Path = typer.Argument(
        ...,
        metavar="RUN_DIR",
        help="An experiment folder (RUNS/<experiment>), one of its cell folders, or a "
        "`poisonlab scan` output folder.",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Scan folders only: the scanned data again, for the most suspicious images (and "
        "ROC curves when it is an .npz with is_poison, as `poisonlab attack` writes). "
        "Default: where the scan read it (summary.json's dataset.source).",
    ),
    max_cells: int = typer.Option(
        8, "--max-cells", help="Experiment folders: how many cells get their own figures."
    ),
    threads: int | None = THREADS,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Write RUN_DIR/report.html: a self-contained page (figures embedded, no external links).

    Sections, each present when its data is: ROC and precision–recall curves per defense, score histograms of clean vs poisoned samples, the 2-d LGM feature scatter with the poisons marked, the most suspicious images beside their relevance heatmaps, attack examples (base / target / poison, or clean / poison / triggered), the metrics table (with the published numbers when the experiment reproduces a paper table), the configuration and the package versions. A list at the end says which sections are missing and why.

    A scan of unlabelled data has no ground truth, so its page shows score histograms per class and the most suspicious images instead of ROC curves.

    Examples:

        poisonlab report runs/seed004

        poisonlab report runs/seed004/3f2a9c0d1e2b4a5c

        poisonlab report scans/mine --data data.npz
    """
    configure(quiet=quiet, verbose=verbose)
    if max_cells < 0:
        raise ConfigError(f"--max-cells must be >= 0, got {max_cells}")
    check_threads(threads)
    if data is not None:
        data_path(data)
    use_threads(threads)
    from poisonlab.reports.html import write_report

    path = write_report(run_dir, data=data, max_cells=max_cells)
    out.print(f"wrote {path}", highlight=False)
