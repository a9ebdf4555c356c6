"""Small helpers shared by the loaders: path checks, part checks and uint8 → ImageDataset."""

from __future__ import annotations

import gzip
import itertools
import shlex
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError

PARTS = ("train", "test")
GZIP_MAGIC = b"\x1f\x8b"


def existing_path(path: str | Path) -> Path:
    """``path`` with ``~`` expanded; a DataError says so when nothing is there."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"{path}: no such file or directory")
    return resolved


def archive_message(path: Path) -> str | None:
    """For a tar or zip archive (how CIFAR-10 and GTSRB are published), a message saying how to
    unpack it: poisonlab reads the unpacked files. None for any other path, and for an archive
    with nothing in it (tarfile takes a zero-filled file, a copy cut short, for an empty tar)."""
    if not path.is_file():
        return None
    try:
        if zipfile.is_zipfile(path):
            kind, command = "zip", "unzip"
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
            if not names or any(name.endswith(".npy") for name in names):
                return None  # empty, or an .npz: its loader says what is wrong with it
            top = _top_folder((name, name.endswith("/")) for name in names)
        elif tarfile.is_tarfile(path):
            kind, command = "tar", "tar xf"
            with tarfile.open(path) as archive:
                members = list(itertools.islice(iter(archive.next, None), _MEMBERS_READ))
            if not members:
                return None
            top = _top_folder((m.name, m.isdir()) for m in members)
        else:
            return None
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError):
        return None
    where = f"the folder it holds ({top})" if top else "the folder you unpack it into"
    return (
        f"{path}: a {kind} archive; poisonlab reads data unpacked: unpack it "
        f"({command} {shlex.quote(path.name)}) and pass {where}"
    )


_MEMBERS_READ = 64
"""How many members of a tar are read to find its top folder (a tar is read from the start:
CIFAR-10's holds 8 files of 30 MB)."""


def _top_folder(members: Iterable[tuple[str, bool]]) -> str | None:
    """The one folder every member (name, is a folder) lies in, such as cifar-10-batches-py;
    None when a file lies at the top or the members lie in several (class folders archived from
    inside their parent)."""
    top = None
    for name, is_dir in members:
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if not parts or parts[0] == "__MACOSX":
            continue  # the archive's own root ("./"), or what macOS adds to a zip it makes
        if (len(parts) == 1 and not is_dir) or parts[0] != (top or parts[0]):
            return None
        top = parts[0]
    return top


def check_part(part: str, source: str, *, has_test: bool) -> None:
    """Refuse an unknown part, and "test" for a source without an official test part."""
    if part not in PARTS:
        raise DataError(f"part must be 'train' or 'test', got {part!r}")
    if part == "test" and not has_test:
        raise DataError(
            f"{source} has no separate test part; load part 'train' and split it "
            "with poisonlab.data.split_dataset"
        )


def read_bytes(path: Path) -> bytes:
    """The content of ``path``, gunzipped when it starts with the gzip magic bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def from_uint8(
    pixels: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    class_names: Sequence[str],
    name: str,
    ids: Sequence[str] | np.ndarray,
) -> ImageDataset:
    """Build an ImageDataset from uint8 N×C×H×W pixels (scaled by 1/255) and integer labels."""
    images = np.ascontiguousarray(pixels).astype(np.float32)
    images /= np.float32(255.0)  # the same arithmetic as save_npz, so round trips are exact
    return from_unit(
        images, labels, num_classes=num_classes, class_names=class_names, name=name, ids=ids
    )


def from_unit(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    class_names: Sequence[str],
    name: str,
    ids: Sequence[str] | np.ndarray,
) -> ImageDataset:
    """Build an ImageDataset from float32 N×C×H×W pixels in [0, 1] and integer labels."""
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        num_classes=num_classes,
        class_names=tuple(class_names),
        name=name,
        ids=np.asarray(ids, dtype=str),
    )


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Labels must be integers in [0, num_classes); the message names ``where`` and the range."""
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found {lo}..{hi}")


def row_ids(source: str, count: int) -> np.ndarray:
    """Ids ``source#0`` .. ``source#<count-1>`` for the rows of one file."""
    return np.char.add(f"{source}#", np.arange(count).astype(str))
