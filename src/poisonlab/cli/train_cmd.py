"""`poisonlab train`: train a model on a data set and save it as a checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from poisonlab.cli import catalog
from poisonlab.cli.common import (
    DATA,
    DEVICE,
    FORCE,
    IMAGE_SIZE,
    LIMIT,
    QUIET,
    SEED,
    THREADS,
    VERBOSE,
    check_device,
    check_epochs,
    check_limit,
    check_threads,
    data_path,
    loader_options,
    parse_image_size,
    use_threads,
)
from poisonlab.cli.console import configure, out, user_errors
from poisonlab.cli.main import app
from poisonlab.cli.output import check_output_dir, output_folder

LOSSES = {"ce": "softmax", "lgm": "lgm"}
TRAIN_FILES = ("model.safetensors", "model.json", "train.json")
"""What `poisonlab train` writes into --out: --force replaces a folder holding only these."""


@app.command("train")
@user_errors
def train_command(
    out_dir: Path = typer.Option(..., "--out", "-o", help="Folder for model.safetensors/json."),
    data: str = DATA,
    model: str = typer.Option(
        "cnn-small", "--model", "-m", help=f"Architecture: {', '.join(catalog.MODELS)}."
    ),
    loss: str = typer.Option("ce", "--loss", help="ce (softmax cross-entropy) or lgm (L-GM)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (default: the model's recipe)."),
    batch_size: int | None = typer.Option(None, help="Batch size (default: recipe)."),
    lr: float | None = typer.Option(None, help="Learning rate (default: recipe)."),
    optimizer: str | None = typer.Option(None, help="adam or sgd (default: recipe)."),
    patience: int | None = typer.Option(
        None, help="Early-stopping patience in epochs (default: recipe)."
    ),
    limit: int | None = LIMIT,
    image_size: str | None = IMAGE_SIZE,
    seed: int = SEED,
    device: str = DEVICE,
    threads: int | None = THREADS,
    force: bool = FORCE,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Train a classifier and save it (safetensors weights + JSON config) to --out.

    The data set is split deterministically from --seed into train / held-out / test parts (the official test part is kept when the source has one), and the test accuracy is printed and saved beside the weights.

    Example:

        poisonlab train --data digits --model lgm-net --loss lgm --out runs/lgm
    """
    configure(quiet=quiet, verbose=verbose)
    if loss not in LOSSES:
        raise typer.BadParameter(f"{loss!r} is not one of ce, lgm", param_hint="--loss")
    check_threads(threads)
    check_device(device)
    check_epochs("--epochs", epochs)
    check_limit(limit)
    catalog.check_names("model", [model], catalog.MODELS)
    data_path(data)
    size = parse_image_size(image_size)
    check_output_dir(out_dir, force=force, owned=TRAIN_FILES)
    from rich.table import Table

    from poisonlab.data.prepare import prepare_splits
    from poisonlab.device import pick_device
    from poisonlab.models import ModelConfig, build_model, save_checkpoint
    from poisonlab.train import evaluate, train_model
    from poisonlab.train.recipes import default_recipe

    split = prepare_splits(
        data, seed=seed, limit=limit, **loader_options(data, size, what="--data")
    )
    threads_used = use_threads(threads, image_shape=split.train.shape)
    with output_folder(out_dir, force=force, owned=TRAIN_FILES) as folder:
        c, h, w = split.train.shape
        config = ModelConfig(model, c, h, w, split.train.num_classes, head=LOSSES[loss])
        network = build_model(config, seed=seed)
        recipe = default_recipe(
            model,
            len(split.train),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            patience=patience,
            seed=seed,
        )
        started = time.perf_counter()
        result = train_model(network, split.train, recipe, device=pick_device(device))
        seconds = time.perf_counter() - started
        test = evaluate(network, split.test)
        # a --limit near the number of classes can leave no test image: no accuracy (null in
        # train.json, which NaN would make invalid JSON), rather than "nan%"
        accuracy = round(test.accuracy, 5) if len(split.test) else None
        summary = {
            "data": str(data),
            "class_names": list(split.train.class_names),
            "test_accuracy": accuracy,
            "train_seconds": round(seconds, 2),
            "recipe": recipe.to_dict(),
            "training": result.to_dict(),
            "threads": threads_used.to_dict(),
        }
        save_checkpoint(network, folder.work, **summary)
        (folder.work / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = Table(title=f"{model} ({loss}) on {split.train.name}")
    for column in ("train", "test", "epochs", "s/epoch", "test accuracy"):
        table.add_column(column, justify="right")
    table.add_row(
        str(len(split.train)),
        str(len(split.test)),
        str(len(result.history)),
        f"{result.seconds_per_epoch:.2f}",
        "-" if accuracy is None else f"{100 * test.accuracy:.2f}%",
    )
    out.print(table)
    out.print(f"saved to {out_dir}")
