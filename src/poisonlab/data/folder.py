"""An image folder: one subfolder per class, class names are the sorted subfolder names.

Accepted files are .png, .jpg, .jpeg and .ppm (any letter case); hidden entries (``.DS_Store``,
``.ipynb_checkpoints``) are skipped, and so are plain files next to the class folders (a README;
images there have no class and are skipped with a warning naming them).
Anything else inside a class folder is an error naming the file, and so is an empty class folder;
one error names every such entry, and every unreadable image, not the first alone.

Pixel depth: 8-bit images (grayscale, colour, palettes) and 16-bit grayscale (PNG, or PGM saved
as .ppm) load to the same [0, 1] range: 8-bit values divided by 255, 16-bit ones by 65535, so a
folder may mix them. Pillow reads 16-bit colour as 8-bit RGB, so it loads at 8-bit precision.
Any other mode is an error naming the file, its mode and what is supported.

Channels: when every image is grayscale (8- or 16-bit) the data set has 1 channel; as soon as one
image has colour (or a palette), every image is converted to RGB (grayscale repeated in the three
channels), so mixed folders lose nothing. Alpha is dropped. Size: every image is resized (bilinear) to ``size`` as (height, width), or by
default to the size of the first image (first class folder, first file in sorted order; refused
above 1024 pixels a side, the largest size a user may choose, naming the file); images
resized without a ``size`` being given are reported as a warning (naming how many, one of them
and how to choose the size: the commands' ``--image-size``), since mixed sizes usually mean mixed
sources.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from poisonlab.data.common import archive_message, check_part, from_unit
from poisonlab.data.dataset import ImageDataset
from poisonlab.data.images import IMAGE_SUFFIXES, is_gray, parse_size, probe, read_image
from poisonlab.errors import DataError
from poisonlab.validation import MAX_IMAGE_SIDE

log = logging.getLogger("poisonlab.data")

CHOOSE_SIZE = (
    "pass --image-size HxW (e.g. 64x64) to the command or, in Python, "
    "load_dataset(path, size=(height, width))"
)
"""How to choose the size images load at, for the messages that ask for a smaller one."""


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` not starting with a dot, sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def class_folders(root: Path) -> list[Path]:
    """The class subfolders of ``root``, sorted by name (hidden folders skipped)."""
    return [p for p in _visible(root) if p.is_dir()]


def is_image_folder(path: Path) -> bool:
    """True for a directory with at least one visible subfolder (the class folders)."""
    return path.is_dir() and bool(class_folders(path))


def list_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files, their class index and the class names, validating every entry."""
    folders = class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class subfolders (expected one folder of images per class)")
    files: list[Path] = []
    labels: list[int] = []
    problems: list[str] = []
    for label, folder in enumerate(folders):
        entries = _visible(folder)
        if not entries:
            problems.append(f"{folder}: empty class folder")
        for entry in entries:
            if entry.is_dir():
                problems.append(f"{entry}: nested folder inside class folder {folder.name!r}")
            elif entry.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append(
                    f"{entry}: not an image file (expected {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            else:
                files.append(entry)
                labels.append(label)
    if problems:
        raise DataError(_all_problems(problems, f"{len(problems)} problems in the class folders"))
    return files, labels, [f.name for f in folders]


def _all_problems(problems: list[str], lead: str, shown: int = 5) -> str:
    """One message for every problem found (each names its file), not the first alone: a folder
    with a Thumbs.db in each of its class folders took one run per file to find them."""
    if len(problems) == 1:
        return problems[0]
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{lead}: " + "; ".join(problems[:shown]) + more


def _unreadable(problems: list[str], total: int) -> str:
    """The message for images that cannot be read, every one named (up to five)."""
    return _all_problems(problems, f"{len(problems)} of {total} images cannot be read")


def _probe_all(files: list[Path]) -> list[tuple[str, tuple[int, int]]]:
    """:func:`probe` of every file; the files that fail are named together."""
    headers, problems = [], []
    for file in files:
        try:
            headers.append(probe(file))
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        raise DataError(_unreadable(problems, len(files)))
    return headers


def _warn_of_loose_images(root: Path) -> None:
    """Warn of images next to the class folders: they have no class, so they are not read, but
    unlike a README they were probably meant to be (an image dropped one folder too high)."""
    loose = [p for p in _visible(root) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        log.warning(
            "%s: %d image(s) next to the class folders are not read (%s): an image's class is "
            "the folder it is in; move them into their class folder",
            root,
            len(loose),
            ", ".join(p.name for p in loose[:3]) + (", ..." if len(loose) > 3 else ""),
        )


def _allocate(root: Path, shape: tuple[int, int, int, int]) -> np.ndarray:
    """An empty float32 array for every image; one too large to allocate is a DataError saying
    how large and how to choose a smaller size (it was a MemoryError traceback)."""
    try:
        return np.empty(shape, dtype=np.float32)
    except MemoryError:
        n, c, h, w = shape
        raise DataError(
            f"{root}: {n} images of {c}×{h}×{w} take {n * c * h * w * 4 / 1e9:.1f} GB as float32, "
            f"more than this machine can allocate; choose a smaller size: {CHOOSE_SIZE}"
        ) from None


def _channels(headers: list[tuple[str, tuple[int, int]]]) -> int:
    """1 when every image (mode, size) is grayscale, else 3."""
    return 1 if all(is_gray(mode) for mode, _ in headers) else 3


def folder_image_shape(path: Path) -> tuple[int, int, int]:
    """(C, H, W) that :func:`load_image_folder` gives without ``size``, from the files' headers."""
    if not path.is_dir():
        raise DataError(f"{path}: not a folder (expected a folder with one subfolder per class)")
    files = list_images(path)[0]
    headers = _probe_all(files)
    return _channels(headers), *_default_size(path, files[0], headers[0][1])


def _default_size(root: Path, first: Path, size: tuple[int, int]) -> tuple[int, int]:
    """``size``, the first image's, as every image's when none is chosen; refused above
    MAX_IMAGE_SIDE per side, the limit of a chosen size: one large photo sorted first would
    otherwise have every image loaded at its size (a 6000×6000 one: 144 MB per image)."""
    if max(size) > MAX_IMAGE_SIDE:
        raise DataError(
            f"{first}: {size[0]}×{size[1]} pixels, the size every image of {root} would be "
            f"loaded at (the first image's), above {MAX_IMAGE_SIDE} per side; choose the size: "
            f"{CHOOSE_SIZE}"
        )
    return size


def load_image_folder(
    path: Path, part: str = "train", *, size: int | tuple[int, int] | None = None
) -> ImageDataset:
    """Load every image under ``path``'s class folders, resized to one size and one mode."""
    check_part(part, f"image folder {path}", has_test=False)
    if not path.is_dir() and (archive := archive_message(path)) is not None:
        raise DataError(archive)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder (expected a folder with one subfolder per class)")
    files, labels, names = list_images(path)
    _warn_of_loose_images(path)
    headers = _probe_all(files)
    channels = _channels(headers)
    shape = parse_size(size) or _default_size(path, files[0], headers[0][1])
    resized = [f for f, (_, hw) in zip(files, headers, strict=True) if hw != shape]
    if resized and size is None:  # a chosen size is the user's decision; a silent one is not
        log.warning(
            "%s: %d of %d images are not %d×%d (the size of %s) and are resized to it "
            "(bilinear), e.g. %s; to choose the size, resize the files, pass --image-size HxW "
            "to the command (scan, train, attack, data info) or, in Python, "
            "load_dataset(path, size=(height, width))",
            path,
            len(resized),
            len(files),
            shape[0],
            shape[1],
            files[0].relative_to(path).as_posix(),
            resized[0].relative_to(path).as_posix(),
        )
    pixels = _allocate(path, (len(files), channels, *shape))
    problems = []
    for k, file in enumerate(files):
        try:
            pixels[k] = read_image(file, channels=channels, size=shape)
        except DataError as exc:  # a truncated file: its header read, its pixels do not
            problems.append(str(exc))
    if problems:
        raise DataError(_unreadable(problems, len(files)))
    return from_unit(
        pixels,
        np.asarray(labels, dtype=np.int64),
        num_classes=len(names),
        class_names=names,
        name=path.resolve().name,
        ids=[f.relative_to(path).as_posix() for f in files],
    )
