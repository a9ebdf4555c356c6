"""`poisonlab demo`: the main job, a tour of poisonlab on the embedded digits data."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from poisonlab.cli.common import (
    DEVICE,
    QUIET,
    SEED,
    THREADS,
    VERBOSE,
    check_device,
    check_threads,
    use_threads,
)
from poisonlab.cli.console import configure, err, out, user_errors
from poisonlab.cli.main import app
from poisonlab.cli.output import check_output_dir, output_folder
from poisonlab.errors import ConfigError

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch loads with these: only when the demo runs, not for --help
    from rich.table import Table

    from poisonlab.reports.demo import DemoResult, DemoSettings
    from poisonlab.workflows.demo_summary import Block

SETTINGS: DemoSettings | None = None
"""The tour ``poisonlab demo`` runs: None = ``DemoSettings()`` (tests swap in
:data:`poisonlab.reports.demo.QUICK`)."""


DEMO_FILES = ("report.html", "runs")
"""What the demo writes into --out: --force replaces a folder holding only these."""


def demo_folder(path: Path, *, force: bool) -> bool:
    """Check the demo folder; True when it holds an earlier demo to resume (without --force).

    A missing or empty folder starts a new demo. Without ``force`` an existing demo folder
    (``runs/results.sqlite``) is resumed and any other folder refused; with ``force`` a folder
    holding only demo files is replaced (once the new tour has finished, see
    :func:`poisonlab.cli.output.output_folder`) and one holding anything else refused.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {path} exists and is not a folder")
    if not path.exists() or not any(path.iterdir()):
        return False
    if force:
        check_output_dir(path, force=True, owned=DEMO_FILES)
        return False
    if (path / "runs" / "results.sqlite").is_file():
        return True
    raise ConfigError(f"output folder {path} exists and holds no demo; choose another --out")


def block_table(block: Block) -> Table:
    """One summary block as a rich table (its note as the caption)."""
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"[bold]{escape(block.title)}[/]",
        title_justify="left",
        caption=escape(block.note),
        caption_justify="left",
    )
    for i, name in enumerate(block.header):
        table.add_column(escape(name), justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in block.rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def print_summary(result: DemoResult, seconds: float) -> None:
    """Each block's table and the verdict on each paper claim it tests, failed steps, and where
    every file is."""
    from poisonlab.reports.demo import BACKDOOR, summary_title
    from poisonlab.workflows.demo_summary import MIN_ASR

    out.print(
        escape(summary_title(result.summaries)), highlight=False, soft_wrap=not out.is_terminal
    )
    colours = {"yes": "green", "no": "red", "not measured": "yellow"}
    for block in result.blocks:
        out.print(block_table(block))
        for claim in block.claims:
            colour = colours[claim.verdict]
            out.print(
                f"  [bold {colour}]reproduced: {claim.verdict}[/] — {escape(claim.paper)}: "
                f"{escape(claim.claim)}. Measured: {escape(claim.measured)} "
                f"(criterion: {escape(claim.criterion)}).",
                highlight=False,
                soft_wrap=True,
            )
        out.print()
    asr = result.metrics.get(BACKDOOR, {}).get("attack.asr")
    if asr is not None and float(asr) < MIN_ASR:
        log.warning(  # the log's WARNING line, as every command warns
            "the BadNets attack reached only %.1f%% success: the backdoor defenses above were "
            "tested against a half-learned backdoor.",
            100 * float(asr),
        )
    for line in result.failures:
        err.print(f"[bold red]failed:[/] {escape(line)}", highlight=False, soft_wrap=True)
    runs = result.runs
    out.print(
        f"report      {result.report}\n"
        f"results     {runs / 'results.sqlite'} (poisonlab table {runs})\n"
        + "".join(
            f"artifacts   {runs / s.experiment}/ (poisonlab report {runs / s.experiment})\n"
            for s in result.summaries
        )
        + f"models      {runs / 'cache'}/\n"
        f"took {seconds:.0f} s",
        highlight=False,
        soft_wrap=True,
    )


@app.command("demo")
@user_errors
def demo_command(
    out_dir: Path = typer.Option(
        Path("demo-output"), "--out", "-o", help="Demo folder: report.html and runs/."
    ),
    seed: int = SEED,
    device: str = DEVICE,
    threads: int | None = THREADS,
    force: bool = typer.Option(
        False, "--force", help="Start over: delete the demo folder first instead of resuming."
    ),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Poison digits with BadNets and feature collision, run every defense, test each paper's claim.

    The tour trains a cross-entropy cnn-small, backdoors it with BadNets (all-to-all, a 4-pixel corner trigger, poisons worth 20% of the training set) and runs every backdoor defense on the poisoned training set: activation clustering, spectral signatures, raw-pixel clustering, deep features, DNN uncertainty, a Bayesian NN and heatmap clustering (one class). It then trains cnn-small with the LGM loss too, crafts twenty feature-collision poisons (one per target) against each model on the same pairs, retrains each victim's last layer once per target (Poison Frogs' one-shot kill), and repeats that behind the LGM likelihood filter.

    It prints one table per part (clean accuracy, attack success, perturbation sizes, what the filter removed, each defense's AUROC, TPR and TNR), and under each table one line per source paper saying which claim the part tests and whether this run reproduced it (yes/no, against a stated criterion). It writes a self-contained OUT/report.html with the same tables and the figures. The runs live in OUT/runs, an ordinary runs folder: run the demo again without --force to resume after an interruption, or read the results with poisonlab table and poisonlab report. It takes about a minute on two quiet CPU cores.

    Examples:

        poisonlab demo

        poisonlab demo --out tour --force

        poisonlab table demo-output/runs
    """
    configure(quiet=quiet, verbose=verbose)
    check_threads(threads)
    check_device(device)
    from poisonlab.device import pick_device
    from poisonlab.experiments.runner import RunInterrupted
    from poisonlab.reports.demo import DemoSettings, run_demo

    pick_device(device)  # a bad --device fails here, before the folder is touched
    resumed = demo_folder(out_dir, force=force)
    replacing = force and out_dir.is_dir() and any(out_dir.iterdir())
    started = time.perf_counter()
    if not quiet:
        what = "resuming the demo in" if resumed else "demo folder"
        err.print(f"{what} {out_dir}", highlight=False)
    # digits: the thread policy's automatic choice is one thread (poisonlab.runtime)
    use_threads(threads, image_shape=(1, 8, 8))

    def tour(folder: Path) -> DemoResult:
        return run_demo(
            folder,
            settings=SETTINGS or DemoSettings(),
            seed=seed,
            device=device,
            # a log keeps each stage on one line; a terminal wraps it at its width
            log=(lambda message: None)
            if quiet
            else (lambda m: err.print(m, highlight=False, soft_wrap=not err.is_terminal)),
        )

    if replacing:  # the earlier demo stays until the new tour has finished
        note = " (--force replaces it only once the new tour has finished)"
        with output_folder(
            out_dir,
            force=True,
            owned=DEMO_FILES,
            interrupt_message=note,
        ) as folder:
            made = tour(folder.work)
        result = replace(
            made, out=out_dir, runs=out_dir / "runs", report=out_dir / made.report.name
        )
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            result = tour(out_dir)
        except RunInterrupted:
            err.print(
                f"[yellow]interrupted[/]: finished steps are saved in {escape(str(out_dir))}; "
                "run the same command without --force to resume.",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
    print_summary(result, time.perf_counter() - started)
    if not result.ok:
        raise typer.Exit(1)
