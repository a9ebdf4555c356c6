"""Pieces shared by commands: output folders never silently overwritten, common options."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from poisonlab.errors import ConfigError


def prepare_output_dir(path: Path, *, force: bool) -> Path:
    """Create ``path`` for a command's outputs; refuse an existing non-empty folder unless --force.

    With ``force`` the old folder is removed first, so no stale file from an earlier run survives
    beside the new results.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {path} exists and is not a folder")
    if path.exists() and any(path.iterdir()):
        if not force:
            raise ConfigError(f"output folder {path} already exists; pass --force to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


SEED = typer.Option(0, "--seed", help="Seed for splits, initialisation and training order.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars, warnings only.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Debug logging.")
FORCE = typer.Option(False, "--force", help="Replace the output folder if it already exists.")
DATA = typer.Option(
    "digits",
    "--data",
    "-d",
    help="Data set: a name (digits, fashion-mnist) or a path (IDX folder, CIFAR-10 batches, "
    "GTSRB root, image folder, .npz).",
)
