"""`poisonlab demo`: the main job, a tour of poisonlab on the embedded digits data."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from poisonlab.cli.common import DEVICE, FORCE, QUIET, SEED, VERBOSE, prepare_output_dir
from poisonlab.cli.console import configure, out, user_errors
from poisonlab.cli.main import app
from poisonlab.data.prepare import prepare_splits
from poisonlab.device import pick_device
from poisonlab.models import ModelConfig, build_model, save_checkpoint
from poisonlab.train import evaluate, train_model
from poisonlab.train.recipes import default_recipe


@app.command("demo")
@user_errors
def demo_command(
    out_dir: Path = typer.Option(Path("demo-output"), "--out", "-o", help="Folder for results."),
    seed: int = SEED,
    device: str = DEVICE,
    force: bool = FORCE,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Train a cross-entropy cnn-small and an LGM lgm-net on digits and report test accuracy."""
    configure(quiet=quiet, verbose=verbose)
    target = prepare_output_dir(out_dir, force=force)
    dev = pick_device(device)
    split = prepare_splits("digits", seed=seed)
    c, h, w = split.train.shape
    table = Table(title=f"digits: {len(split.train)} train / {len(split.test)} test images")
    for column in ("model", "loss", "epochs", "seconds", "test accuracy"):
        table.add_column(column, justify="right")
    for arch, head in (("cnn-small", "softmax"), ("lgm-net", "lgm")):
        model = build_model(
            ModelConfig(arch, c, h, w, split.train.num_classes, head=head), seed=seed
        )
        recipe = default_recipe(arch, len(split.train), seed=seed)
        started = time.perf_counter()
        result = train_model(model, split.train, recipe, device=dev, description=f"{arch} ({head})")
        seconds = time.perf_counter() - started
        accuracy = evaluate(model, split.test).accuracy
        save_checkpoint(model, target / f"{arch}-{head}", test_accuracy=accuracy)
        table.add_row(
            arch, head, str(len(result.history)), f"{seconds:.1f}", f"{100 * accuracy:.2f}%"
        )
    out.print(table)
    out.print(f"models saved under {target}")
