"""MNIST and Fashion-MNIST in their IDX files (raw or gzipped), validated byte by byte.

An IDX file starts with two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions, then one big-endian uint32 per dimension and the data in row-major order. Images
have magic number 2051 (3 dimensions: N, rows, columns), labels 2049 (1 dimension: N).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from poisonlab.data.common import (
    GZIP_MAGIC,
    check_labels,
    check_part,
    from_uint8,
    read_bytes,
    row_ids,
)
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
UBYTE = 0x08
NUM_CLASSES = 10
DIGIT_NAMES = tuple(str(k) for k in range(NUM_CLASSES))
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_PREFIX = {"train": "train", "test": "t10k"}
_KINDS = {"images": "images{sep}idx3-ubyte", "labels": "labels{sep}idx1-ubyte"}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array stored in IDX file ``path``, checked against the expected ``magic``."""
    data = read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        raise DataError(
            f"{path}: wrong magic number {found} (0x{found:08x}); an IDX {kind} file "
            f"starts with {magic} (0x{magic:08x})"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = header + math.prod(dims)  # Python ints: a corrupt header cannot overflow
    if len(data) < expected:
        raise DataError(
            f"{path}: truncated IDX file: header declares {'×'.join(map(str, dims))} "
            f"values ({expected} bytes) but the file has {len(data)} bytes"
        )
    if len(data) > expected:
        raise DataError(
            f"{path}: {len(data) - expected} unexpected bytes after the "
            f"{'×'.join(map(str, dims))} values the header declares"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of ``path``'s content, gunzipped when it is gzip data (fewer
    when the file is shorter); OSError or EOFError when it does not read."""
    with path.open("rb") as raw:
        head = raw.read(size)
    if head[:2] == GZIP_MAGIC:
        with gzip.open(path, "rb") as unzipped:
            head = unzipped.read(size)
    return head


def idx_magic(path: Path) -> int | None:
    """The magic number of ``path`` if it looks like an unsigned-byte IDX file, else None."""
    try:
        head = _head(path, 4)
    except (OSError, EOFError):
        return None
    magic = int.from_bytes(head, "big") if len(head) == 4 else None
    return magic if magic in (IMAGES_MAGIC, LABELS_MAGIC) else None


def idx_image_shape(path: Path) -> tuple[int, int, int]:
    """(1, H, W) of the training images at ``path`` (an IDX folder, or either file of a pair),
    from the images file's header; a DataError when it does not read as one."""
    if path.is_dir():
        images = _find(path, "train", "images")
        if images is None:
            raise DataError(f"{path}: no train images file")
    else:
        images = path if idx_magic(path) == IMAGES_MAGIC else partner(path)
    try:
        head = _head(images, 16)
    except (OSError, EOFError) as exc:
        raise DataError(f"{images}: cannot read the IDX header ({exc})") from None
    if len(head) < 16 or int.from_bytes(head[:4], "big") != IMAGES_MAGIC:
        raise DataError(f"{images}: not an IDX image file")
    return 1, int.from_bytes(head[8:12], "big"), int.from_bytes(head[12:16], "big")


def _find(folder: Path, part: str, kind: str) -> Path | None:
    """The first existing standard name for ``part``'s ``kind`` file in ``folder``."""
    for sep in ("-", "."):
        base = f"{_PREFIX[part]}-{_KINDS[kind].format(sep=sep)}"
        for name in (base + ".gz", base):
            if (folder / name).is_file():
                return folder / name
    return None


def find_idx_pair(folder: Path, part: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``part`` in ``folder``, or None when either is absent."""
    images, labels = _find(folder, part, "images"), _find(folder, part, "labels")
    return (images, labels) if images and labels else None


def is_idx_folder(path: Path) -> bool:
    """True for a folder holding a standard MNIST-style train image or label file.

    Either one is enough, so a folder missing its partner is read as IDX and its error names the
    missing file, rather than calling the whole folder unrecognised.
    """
    return path.is_dir() and any(_find(path, "train", kind) for kind in _KINDS)


def _standard_name(part: str, kind: str) -> str:
    return f"{_PREFIX[part]}-{_KINDS[kind].format(sep='-')}[.gz]"


def is_idx_file(path: Path) -> bool:
    """True for a single IDX image or label file (detected from its magic number)."""
    return path.is_file() and idx_magic(path) is not None


def partner(path: Path) -> Path:
    """The label file that goes with image file ``path`` (or the reverse), by the standard names."""
    name = path.name
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if a in name or b in name:
            other = name.replace(a, b) if a in name else name.replace(b, a)
            stem = other.removesuffix(".gz")
            for candidate in (stem + ".gz", stem):
                if (path.parent / candidate).is_file():
                    return path.parent / candidate
            raise DataError(f"{path}: the matching file {other} is missing in {path.parent}")
    raise DataError(
        f"{path}: cannot tell which file holds the matching "
        "images/labels (expected the standard names, e.g. train-images-idx3-ubyte.gz)"
    )


def class_names_for(path: Path, kind: str | None) -> tuple[str, tuple[str, ...]]:
    """The data set name and class names: Fashion-MNIST when asked or when the folder's name says so."""
    folder = path if path.is_dir() else path.parent
    named = "fashion" in f"{folder.resolve().name}/{path.name}".lower()
    fashion = kind == "fashion-mnist" or (kind is None and named)
    return ("fashion-mnist", FASHION_NAMES) if fashion else ("mnist", DIGIT_NAMES)


def load_idx_pair(
    images_path: Path, labels_path: Path, *, name: str, class_names: tuple[str, ...]
) -> ImageDataset:
    """Images and labels from two IDX files, checked for matching counts and label range.

    The magic numbers already fix the dimensions: 3 for images (N, rows, columns), 1 for labels.
    """
    pixels = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(pixels) != len(labels):
        raise DataError(
            f"{images_path} has {len(pixels)} images but {labels_path.name} "
            f"has {len(labels)} labels"
        )
    check_labels(labels, len(class_names), str(labels_path))
    n, h, w = pixels.shape
    if h == 0 or w == 0:
        raise DataError(
            f"{images_path}: the header declares {h}×{w}-pixel images; expected 1×1 or more"
        )
    return from_uint8(
        pixels.reshape(n, 1, h, w),
        labels,
        num_classes=len(class_names),
        class_names=class_names,
        name=name,
        ids=row_ids(images_path.name, n),
    )


def load_idx(path: Path, part: str = "train", *, kind: str | None = None) -> ImageDataset:
    """Load ``part`` of an IDX folder, or one IDX file with its partner (a single-part source)."""
    name, class_names = class_names_for(path, kind)
    if path.is_dir():
        check_part(part, str(path), has_test=True)
        pair = find_idx_pair(path, part)
        if pair is None:
            found = {kind: _find(path, part, kind) for kind in _KINDS}
            missing = [_standard_name(part, kind) for kind, file in found.items() if file is None]
            present = [file.name for file in found.values() if file is not None]
            if present:
                raise DataError(
                    f"{path}: {missing[0]} is missing (found {present[0]}; the {part} part "
                    "needs both the image and the label file)"
                )
            raise DataError(f"{path}: no {part} files ({' and '.join(missing)})")
        return load_idx_pair(*pair, name=name, class_names=class_names)
    check_part(
        part, f"{path} (a single IDX file; pass its folder to choose a part)", has_test=False
    )
    other = partner(path)
    if idx_magic(path) == LABELS_MAGIC:
        path, other = other, path
    return load_idx_pair(path, other, name=name, class_names=class_names)
