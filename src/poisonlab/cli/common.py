"""Pieces shared by commands: common options, and the light checks every command makes before it
imports torch (missing files, names, thread counts). Output folders: :mod:`poisonlab.cli.output`.

Nothing here imports torch at import or in its checks: ``--help`` and argument errors answer in
well under a second (:func:`loader_options`, called once those checks passed, reads the data's
format through the loaders).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from poisonlab import runtime
from poisonlab.cli import catalog
from poisonlab.errors import ConfigError, DataError
from poisonlab.validation import MAX_IMAGE_SIDE, ImageSize

SEED = typer.Option(0, "--seed", help="Seed for splits, initialisation and training order.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress, only warnings and results.")
VERBOSE = typer.Option(
    False, "--verbose", "-v", help="Also the libraries' info and debug messages."
)
FORCE = typer.Option(
    False,
    "--force",
    help="Replace an earlier output folder of this command, once the new results are complete "
    "(a folder holding other files is refused).",
)
DATA = typer.Option(
    "digits",
    "--data",
    "-d",
    help="Data set: a name (digits, fashion-mnist) or a path (IDX folder, CIFAR-10 batches, "
    "GTSRB root, image folder, .npz).",
)
LIMIT = typer.Option(
    None,
    "--limit",
    help="Use about this many training images, a stratified subset (each class keeps its share, "
    "rounded); the held-out and test parts shrink in the same proportion.",
)
THREADS = typer.Option(
    None,
    "--threads",
    help="CPU threads for torch and the numeric libraries, 1 to the machine's cores (default: "
    "POISONLAB_THREADS, else one thread for small images and every core for larger ones).",
)
IMAGE_SIZE = typer.Option(
    None,
    "--image-size",
    metavar="<HxW>",
    help="Resize the images of an image folder or GTSRB to HEIGHTxWIDTH pixels (e.g. 32x32; one "
    "number: a square; at most 1024 per side); default: the first image's size for an image "
    "folder (others are resized to it, with a warning), 32x32 for GTSRB.",
)


_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_SIZE = ImageSize()


def check_device(device: str) -> None:
    """Refuse a --device that is no device name now (torch-free); whether CUDA is there is
    checked when the device is picked."""
    if not _DEVICE.fullmatch(device):
        raise ConfigError(f"unknown device {device!r}: expected auto, cpu, cuda or cuda:N")


def check_epochs(option: str, epochs: int | None) -> None:
    """Refuse an epoch count below 1 now (torch-free)."""
    if epochs is not None and epochs < 1:
        raise ConfigError(f"{option} {epochs}: expected a whole number of epochs >= 1")


def check_limit(limit: int | None) -> None:
    """Refuse a --limit below 1 now (torch-free)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: expected a whole number of training images >= 1")


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``--image-size`` as (height, width): ``"32x24"`` or ``"32"`` (a square); None stays None.
    Refused now, before any work, unless both are whole numbers of pixels from 1 to
    :data:`~poisonlab.validation.MAX_IMAGE_SIDE` (torch-free; read by
    :class:`~poisonlab.validation.ImageSize`, as ``[data] image_size`` is)."""
    if text is None:
        return None
    if not _SIZE.accepts(text):  # as [data] image_size is read
        raise ConfigError(
            f"--image-size {text!r}: expected HEIGHTxWIDTH in whole pixels >= 1 (e.g. 32x32), "
            f"or one number for a square; each side at most {MAX_IMAGE_SIDE}"
        )
    return _SIZE.convert(text)


def loader_options(
    spec: str, size: tuple[int, int] | None, *, what: str = "", strict: bool = True
) -> dict[str, Any]:
    """The loader options for data ``spec`` (``load_dataset(spec, **options)``): ``size`` from
    ``--image-size`` where its format is resized (an image folder, GTSRB). A source of another
    format is refused when ``strict`` (the command's main data), else left at its own size (a
    held-out set in another format). ``what`` names the option that gave ``spec`` in the message.
    Reads only the format's headers, but imports the loaders (and so torch)."""
    if size is None:
        return {}
    from poisonlab.data.loaders import resize_options

    given = f"--image-size {size[0]}x{size[1]}"
    named = f"{what} {spec}" if what else spec
    return resize_options(spec, size, given=given, named=named, strict=strict)


def check_threads(threads: int | None) -> None:
    """Refuse a bad --threads or POISONLAB_THREADS now, before any work (torch-free)."""
    runtime.requested_threads(threads)


def use_threads(
    threads: int | None, image_shape: Sequence[int] | None = None
) -> runtime.ThreadSettings:
    """Apply the thread policy for a command: :func:`poisonlab.runtime.use_threads`, with a count
    from ``--threads`` recorded as coming from "--threads"."""
    return runtime.use_threads(threads, image_shape=image_shape, source="--threads")


def data_path(spec: str) -> Path | None:
    """The path a data spec names, checked to exist; None for a built-in source. Torch-free.

    The same forms as :func:`poisonlab.data.load_dataset` (a source name, ``NAME:PATH`` or a
    path) and the same messages for a missing path; the format itself is checked when loading.
    """
    if not spec.strip():  # "" (an unset shell variable) would otherwise name this folder
        names = ", ".join(sorted(catalog.DATA_SOURCES))
        raise DataError(f"empty data name or path {spec!r}; give a path or one of: {names}")
    if spec in catalog.DATA_SOURCES:
        _, path_mode = catalog.DATA_SOURCES[spec]
        if path_mode != "required":
            return None
        if not Path(spec).exists():
            raise DataError(f"{spec} needs a path: {spec}:PATH (poisonlab never downloads data)")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in catalog.DATA_SOURCES:
        if catalog.DATA_SOURCES[prefix][1] == "none":
            raise DataError(f"{prefix} is built in and takes no path, got {spec!r}")
        if not rest.strip():
            raise DataError(f"{spec!r} names no path: {prefix}:PATH")
        path = Path(rest).expanduser()
        if not path.exists():
            raise DataError(f"{rest}: no such file or directory")
        return path
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(sorted(catalog.DATA_SOURCES))
        raise DataError(f"{spec}: no such file or directory (data source names: {names})")
    return path


def absolute_spec(spec: str) -> str:
    """``spec`` with its path made absolute (``NAME:PATH`` keeps its name), a built-in name as is:
    what summary.json records, so that ``poisonlab report`` finds the data from any folder."""
    path = data_path(spec)
    if path is None:
        return spec
    prefix, sep, _ = spec.partition(":")
    absolute = str(path.resolve())
    return f"{prefix}:{absolute}" if sep and prefix in catalog.DATA_SOURCES else absolute


def existing_file(path: Path, what: str) -> Path:
    """``path`` if something is there, else a DataError naming the option (torch-free)."""
    if not path.expanduser().exists():
        raise DataError(f"{what} {path}: no such file or directory")
    return path.expanduser()


def input_paths(specs: list[str | None], model: Path | None) -> list[Path]:
    """The input files and folders of a command, each checked to exist (torch-free)."""
    paths = [data_path(spec) for spec in specs if spec is not None]
    if model is not None:
        paths.append(existing_file(model, "--model"))
    return [p.resolve() for p in paths if p is not None]


def check_output_apart(out_dir: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that is, contains or lies inside an input: writing it (or
    replacing it with --force) would change or delete what the command reads."""
    target = out_dir.resolve()
    for path in inputs:
        if target == path or target in path.parents or (path.is_dir() and path in target.parents):
            raise ConfigError(f"--out {out_dir} overlaps the input {path}; choose another folder")
