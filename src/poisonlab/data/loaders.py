"""One entry point for every data source: a registered name, ``name:PATH``, or a detected path.

Specs: ``digits`` and ``fashion-mnist`` need no path; ``mnist:PATH``, ``fashion-mnist:PATH``,
``cifar10:PATH``, ``gtsrb:PATH``, ``npz:PATH`` and ``folder:PATH`` force a format; any other
path has its format detected from its contents (an .npz archive, an IDX file or folder, a CIFAR-10
batch folder, a GTSRB root, else a folder of class subfolders). Nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonlab.data import builtin, cifar, folder, gtsrb, idx, npz
from poisonlab.data.common import archive_message, existing_path
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError, DataError
from poisonlab.registry import Registry
from poisonlab.validation import short_repr


@dataclass(frozen=True)
class DataSource:
    """How to load one format: ``load(path, part, **options)``, and whether it has a test part."""

    name: str
    summary: str
    load: Callable[..., ImageDataset]
    has_test: Callable[[Path | None], bool]
    path: str = "required"  # "required", "optional" or "none"
    options: tuple[str, ...] = ()
    shape: Callable[[Path | None], tuple[int, int, int]] | None = None
    """(C, H, W) of the images ``load`` gives without options, from metadata or headers."""


DATA_SOURCES: Registry[DataSource] = Registry("data source")


def _add(source: DataSource) -> DataSource:
    """Register ``source`` under its name."""
    return DATA_SOURCES.register(source.name)(source)


def _given(path: Path | None) -> Path:
    """``path`` of a source whose path is required (resolve refuses it missing)."""
    assert path is not None
    return path


def _never(path: Path | None) -> bool:
    """Single-part sources: callers split them with poisonlab.data.split_dataset."""
    return False


def _idx_has_test(path: Path | None) -> bool:
    """An IDX folder (not a single file) with the t10k files."""
    folder_path = path if path is not None else builtin.fashion_mnist_dir()
    return folder_path.is_dir() and idx.find_idx_pair(folder_path, "test") is not None


def _cifar_has_test(path: Path | None) -> bool:
    root = cifar.cifar_root(path) if path is not None else None
    return root is not None and (root / "test_batch").is_file()


def _gtsrb_has_test(path: Path | None) -> bool:
    root = gtsrb.gtsrb_root(path) if path is not None else None
    return root is not None and gtsrb.has_test_annotations(root)


DIGITS = _add(
    DataSource(
        "digits",
        "scikit-learn's 8×8 handwritten digits (1797 images, built in)",
        lambda path, part: builtin.load_digits(part),
        _never,
        path="none",
        shape=lambda path: (1, 8, 8),
    )
)
FASHION_MNIST = _add(
    DataSource(
        "fashion-mnist",
        "Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist, or a folder)",
        lambda path, part: builtin.load_fashion_mnist(path, part),
        _idx_has_test,
        path="optional",
        shape=lambda path: idx.idx_image_shape(path or builtin.fashion_mnist_dir()),
    )
)
MNIST = _add(
    DataSource(
        "mnist",
        "MNIST IDX files: a folder with train-/t10k- images and labels, or one file",
        lambda path, part: idx.load_idx(path, part, kind="mnist"),
        _idx_has_test,
        shape=lambda path: idx.idx_image_shape(_given(path)),
    )
)
CIFAR10 = _add(
    DataSource(
        "cifar10",
        "CIFAR-10 python batches (cifar-10-batches-py/)",
        cifar.load_cifar10,
        _cifar_has_test,
        shape=lambda path: (3, 32, 32),
    )
)
GTSRB = _add(
    DataSource(
        "gtsrb",
        "GTSRB published layout (Final_Training/Images, Final_Test/Images), 32×32",
        gtsrb.load_gtsrb,
        _gtsrb_has_test,
        options=("size", "roi"),
        shape=lambda path: (3, 32, 32),  # load_gtsrb's default size
    )
)
NPZ = _add(
    DataSource(
        "npz",
        ".npz with x and y (as written by save_npz)",
        npz.load_npz,
        _never,
        shape=lambda path: npz.npz_image_shape(_given(path)),
    )
)
FOLDER = _add(
    DataSource(
        "folder",
        "a folder with one subfolder of images (png, jpg, ppm) per class",
        folder.load_image_folder,
        _never,
        options=("size",),
        shape=lambda path: folder.folder_image_shape(_given(path)),
    )
)
# A detected IDX path: the class names follow the path (Fashion-MNIST if it says "fashion").
_IDX_DETECTED = DataSource(
    "mnist",
    MNIST.summary,
    lambda path, part: idx.load_idx(path, part),
    _idx_has_test,
    shape=MNIST.shape,
)
_DETECTION: tuple[tuple[Callable[[Path], bool], DataSource], ...] = (
    (npz.looks_like_npz, NPZ),
    (lambda p: idx.is_idx_folder(p) or idx.is_idx_file(p), _IDX_DETECTED),
    (lambda p: cifar.cifar_root(p) is not None or cifar.enclosing_root(p) is not None, CIFAR10),
    (lambda p: gtsrb.gtsrb_root(p) is not None or gtsrb.enclosing_root(p) is not None, GTSRB),
    (folder.is_image_folder, FOLDER),
)


# Folders poisonlab itself writes, which hold data files (or none) but are not data: the files
# that mark each, and what to pass instead (read as an image folder, their model/ and victim/
# subfolders looked like classes and model.json like an image that is not one).
_OUTPUT_FOLDERS = (
    (("attack.json", "poisoned.npz"), "the output of poisonlab attack: pass {path}/poisoned.npz"),
    (
        ("summary.json", "scores.csv", "clean.npz"),
        "the output of poisonlab scan: pass {path}/clean.npz for the data it kept",
    ),
    (
        ("model.json", "model.safetensors"),
        "a model checkpoint (poisonlab train, a scan's model/), not data: give it as --model",
    ),
)


def detect_source(path: Path) -> DataSource:
    """The format of ``path``, detected from its contents; a DataError when none fits."""
    for marks, instead in _OUTPUT_FOLDERS:
        if path.is_dir() and all((path / name).is_file() for name in marks):
            raise DataError(f"{path} is {instead.format(path=path.as_posix())}")
    for matches, source in _DETECTION:
        if matches(path):
            return source
    archive = archive_message(path)  # CIFAR-10 and GTSRB are published as archives
    if archive is not None:
        raise DataError(archive)
    kind = "folder" if path.is_dir() else "file"
    raise DataError(
        f"{path}: unrecognised data {kind}; expected an .npz, MNIST-style IDX files, "
        "a CIFAR-10 batch folder, a GTSRB folder or a folder of class subfolders"
    )


def resolve(spec: str | Path) -> tuple[DataSource, Path | None]:
    """The data source and path named by ``spec`` (see the module docstring for the forms)."""
    if not isinstance(spec, str | Path):
        raise DataError(
            f"data must be a source name or a path (str or Path), got {type(spec).__name__} "
            f"{short_repr(spec)}"
        )
    if not str(spec).strip():  # "" (an unset shell variable) would otherwise read this folder
        names = ", ".join(DATA_SOURCES.names())
        raise DataError(f"empty data name or path {spec!r}; give a path or one of: {names}")
    if isinstance(spec, str):
        if spec in DATA_SOURCES:
            source = DATA_SOURCES.get(spec)
            if source.path != "required":
                return source, None
            if not Path(spec).exists():
                raise DataError(
                    f"{spec} needs a path: {spec}:PATH (poisonlab never downloads data)"
                )
        prefix, sep, rest = spec.partition(":")
        if sep and prefix in DATA_SOURCES:
            source = DATA_SOURCES.get(prefix)
            if source.path == "none":
                raise DataError(f"{prefix} is built in and takes no path, got {spec!r}")
            if not rest.strip():  # "npz:" would otherwise read the current folder
                raise DataError(f"{spec!r} names no path: {prefix}:PATH")
            return source, existing_path(rest)
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(DATA_SOURCES.names())
        raise DataError(f"{spec}: no such file or directory (data source names: {names})")
    return detect_source(path), path


def load_dataset(spec: str | Path, *, part: str = "train", **options: Any) -> ImageDataset:
    """Load ``part`` ("train" or "test") of the data named by ``spec``, validated.

    ``options`` go to the format's loader: ``size`` (int or (height, width)) for GTSRB and
    image folders, ``roi`` (crop to the sign before resizing) for GTSRB. Single-part sources
    (digits, .npz, image folders) raise a DataError for ``part="test"``: split them instead.
    """
    source, path = resolve(spec)
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        accepted = ", ".join(source.options) or "none"
        raise ConfigError(
            f"option(s) {', '.join(unknown)} do not apply to {source.name} data "
            f"(accepted: {accepted})"
        )
    return source.load(path, part, **options)


def resize_options(
    spec: str | Path, size: tuple[int, int] | None, *, given: str, named: str, strict: bool = True
) -> dict[str, Any]:
    """The loader options that resize ``spec``'s images to ``size`` (height, width): ``{"size":
    size}`` for a format that is resized (an image folder, GTSRB), ``{}`` for no size. Another
    format is refused when ``strict`` (a ConfigError naming ``given``, how the user asked for the
    size, and ``named``, where the data was named), else left at its own size. Reads headers only.
    """
    if size is None:
        return {}
    source = resolve(spec)[0]
    if "size" in source.options:
        return {"size": size}
    if strict:
        raise ConfigError(
            f"{given}: only image folders and GTSRB are resized, not {source.name} data "
            f"({named}, whose images keep their size)"
        )
    return {}


def check_source(spec: str | Path) -> DataSource:
    """Check, without loading it, that ``spec`` names data that is there; return its source.

    What a dry run needs: the path exists and its format is recognised (:func:`resolve` reads
    only headers), and the built-in Fashion-MNIST is installed when no path is given. Contents are
    validated when the data is loaded.

    Raises
    ------
    DataError
        Naming the spec and what is missing.
    """
    source, path = resolve(spec)
    if source.name == FASHION_MNIST.name and path is None:
        builtin.fashion_mnist_dir()  # a DataError saying how to install it
    return source


def image_shape(
    spec: str | Path, size: tuple[int, int] | None = None
) -> tuple[int, int, int] | None:
    """The (C, H, W) of the images ``load_dataset(spec)`` gives, without loading them: from the
    source's metadata (digits, CIFAR-10, GTSRB at its default size) or its files' headers (IDX,
    .npz, an image folder's images); with ``size`` (height, width), as ``load_dataset(spec,
    size=size)`` gives them. None when a header does not read: loading reports why.
    """
    source, path = resolve(spec)
    if source.shape is None:
        return None
    try:
        channels, height, width = source.shape(path)
    except DataError:
        return None
    if size is not None and "size" in source.options:
        height, width = size
    return channels, height, width


def has_test_part(spec: str | Path) -> bool:
    """True when ``load_dataset(spec, part="test")`` has an official test part to return."""
    source, path = resolve(spec)
    try:
        return source.has_test(path)
    except DataError:
        return False


def source_help() -> str:
    """One line per registered data source, for CLI help texts."""
    return "\n".join(f"{name}: {DATA_SOURCES.get(name).summary}" for name in DATA_SOURCES)
