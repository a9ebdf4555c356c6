"""`poisonlab data info`: what a data source holds, before anything is trained on it."""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

from poisonlab.cli.catalog import source_help
from poisonlab.cli.common import (
    IMAGE_SIZE,
    QUIET,
    THREADS,
    VERBOSE,
    check_threads,
    data_path,
    loader_options,
    parse_image_size,
    use_threads,
)
from poisonlab.cli.console import configure, out, user_errors
from poisonlab.cli.main import Typer, app
from poisonlab.errors import DataError
from poisonlab.ranges import counted

data_app = Typer(no_args_is_help=True, rich_markup_mode="rich")


class Part(str, Enum):
    """The part of a data source to load."""

    train = "train"
    test = "test"


SOURCES_EPILOG = "Data sources:\n\n" + source_help().replace("\n", "\n\n")


@data_app.command("info", epilog=SOURCES_EPILOG)
@user_errors
def info_command(
    source: str = typer.Argument(
        ...,
        metavar="PATH_OR_NAME",
        help="A name (digits, fashion-mnist), NAME:PATH, or a path whose format is detected.",
    ),
    part: Part = typer.Option(
        Part.train, "--part", help="train, or test for sources with an official test part."
    ),
    image_size: str | None = IMAGE_SIZE,
    threads: int | None = THREADS,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
) -> None:
    """Show the name, size, image shape and per-class counts of a data set.

    An attack's .npz (`poisonlab attack`) also shows how many samples it marks is_poison: the
    ground truth `poisonlab scan` measures its defenses against.

    What training would object to (too few images per class, empty classes, images resized to
    one size) is printed as warnings first; a source without any image is an error, as in train
    and scan.

    Examples:

        poisonlab data info digits

        poisonlab data info /data/cifar-10-batches-py --part test
    """
    configure(quiet=quiet, verbose=verbose)
    check_threads(threads)
    data_path(source)
    size = parse_image_size(image_size)
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from poisonlab.data.checks import data_errors, data_warnings, log
    from poisonlab.data.loaders import has_test_part, load_dataset

    two_parts = has_test_part(source)
    if part is Part.test and not two_parts:  # the library's message names Python
        raise DataError(
            f"--part test: {source} has no separate test part (a CIFAR-10 folder with "
            "test_batch, an IDX folder with the t10k files, GTSRB with GT-final_test.csv have "
            "one); use --part train: train, attack and scan split held-out and test images "
            "from it themselves"
        )
    # logs what it resized, as train and scan do
    dataset = load_dataset(source, part=part.value, **loader_options(source, size))
    if len(dataset) == 0:  # nothing to show (it read "classes 1"); train and scan refuse it too
        raise DataError(data_errors(dataset, what=source)[0])
    use_threads(threads, image_shape=dataset.shape)
    for message in data_errors(dataset) + data_warnings(dataset):  # what training would meet
        log.warning(message)  # the log path train and scan warn through (WARNING ...)
    c, h, w = dataset.shape
    # a source without an official test part (an .npz, one IDX file, digits) is not a "train" part
    title = f"{dataset.name} ({part.value})" if two_parts else dataset.name
    summary = Table(title=escape(title), show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    summary.add_row("name", Text(dataset.name))
    summary.add_row("samples", str(len(dataset)))
    summary.add_row("image shape (C×H×W)", f"{c}×{h}×{w}")
    summary.add_row("classes", str(dataset.num_classes))
    poisons = _known_poisons(source, dataset) if part is Part.train else None
    if poisons is not None:  # an attack's poisoned.npz: `poisonlab scan` scores against it
        summary.add_row("ground truth", f"is_poison: {counted(poisons, 'poison')}")
    out.print(summary)
    counts = Table(title="samples per class")
    counts.add_column("class", justify="right")
    counts.add_column("name")
    counts.add_column("count", justify="right")
    for label, (name, count) in enumerate(
        zip(dataset.class_names, dataset.class_counts(), strict=True)
    ):
        counts.add_row(str(label), Text(name), str(count))
    out.print(counts)


def _known_poisons(source: str, dataset: Any) -> int | None:
    """How many samples the file marks ``is_poison`` (an attack's .npz), else None."""
    import numpy as np

    from poisonlab.reports.scan_report import ground_truth

    truth = ground_truth(source, np.asarray(dataset.ids).astype(str))
    return None if truth is None else int(truth.sum())


app.add_typer(
    data_app,
    name="data",
    help="Inspect a data set (size, image shape, class counts) before training on it.",
)
