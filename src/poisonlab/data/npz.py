"""NumPy .npz data sets, as written by :func:`poisonlab.data.save_npz` (never unpickled).

Arrays: ``x`` of shape (N, H, W) or (N, H, W, C) with C in {1, 3}, either uint8 (divided by
255) or float already in [0, 1]; ``y`` of shape (N,) with integer labels >= 0; optional ``ids``
(N strings) and ``class_names`` (one string per class; without it the classes are 0..max(y), which
is refused when max(y) is far above the number of distinct labels: declare sparse classes with
``class_names``, see :func:`poisonlab.data.checks.check_label_range`).
``is_poison``, the ground-truth mask ``poisonlab attack`` writes and ``data info``, ``scan`` and
``report`` read, is checked here too (N booleans, or integers 0/1), so a malformed one fails at load
time rather than after a scan. Other arrays are ignored here.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from poisonlab.data.checks import check_label_range
from poisonlab.data.common import check_part, from_uint8, row_ids
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import DataError

ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
SUFFIXES = (".npz", ".npy")


def is_npz_file(path: Path) -> bool:
    """True for a zip archive of ``.npy`` members (how .npz files are laid out), any suffix."""
    try:
        with path.open("rb") as handle:
            if handle.read(4) != ZIP_MAGIC:
                return False
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".npy") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def looks_like_npz(path: Path) -> bool:
    """True for an .npz archive, and for any file named .npz or .npy: those are read as NumPy
    data, so a truncated or mislabelled one gets an error saying what is wrong with it instead
    of "unrecognised data"."""
    return is_npz_file(path) or (path.is_file() and path.suffix.lower() in SUFFIXES)


def _open_error(path: Path, exc: Exception) -> DataError:
    """Why ``np.load`` could not open ``path`` as an archive, from the file's first bytes."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as error:
        return DataError(f"{path}: cannot read ({error.strerror or error})")
    if head.startswith(ZIP_MAGIC):
        return DataError(f"{path}: corrupt or truncated .npz (zip) archive ({exc})")
    if head.startswith(NPY_MAGIC):
        return DataError(_single_npy(path))
    return DataError(
        f"{path}: not an .npz archive (a zip of .npy arrays, as numpy.savez writes); "
        f"the file starts with {head!r}"
    )


def _single_npy(path: Path) -> str:
    return (
        f"{path}: a single .npy array, not an .npz archive with 'x' and 'y' "
        "(write both with numpy.savez(path, x=..., y=...) or poisonlab.data.save_npz)"
    )


def npz_image_shape(path: Path) -> tuple[int, int, int]:
    """(C, H, W) of the images in ``x``, from its .npy header (the pixels are not read); a
    DataError when ``x`` is missing or its header does not read."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape = np.lib.format.read_array_header_1_0(member)[0]
            else:
                shape = np.lib.format.read_array_header_2_0(member)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the header of 'x' ({exc})") from None
    if len(shape) == 3:
        return 1, int(shape[1]), int(shape[2])
    if len(shape) == 4:
        return int(shape[3]), int(shape[1]), int(shape[2])
    raise DataError(f"{path}: 'x' must have shape (N, H, W) or (N, H, W, C), got {shape}")


def _read(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray | None:
    """Array ``key`` of the archive or None when absent; object arrays are refused."""
    if key not in archive.files:
        return None
    try:
        return archive[key]
    except ValueError as exc:  # object arrays (allow_pickle is False), or a corrupt member
        if "allow_pickle" not in str(exc):
            raise DataError(f"{path}: array {key!r} is corrupt ({exc})") from None
        raise DataError(f"{path}: array {key!r} cannot be read without pickle ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: array {key!r} is corrupt ({exc})") from None


def _images(x: np.ndarray, path: Path, key: str = "x") -> np.ndarray:
    """Array ``key`` as (N, C, H, W), its dtype and range checked (uint8, or float in [0, 1])."""
    given = x.shape
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{path}: {key!r} must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if 0 in x.shape[1:3]:
        raise DataError(
            f"{path}: {key!r} holds images of {x.shape[1]}×{x.shape[2]} pixels (shape {given}); "
            "expected at least 1×1"
        )
    if x.shape[-1] not in (1, 3):
        hint = ""
        if x.shape[1] in (1, 3):  # how PyTorch code usually holds images
            hint = "; it looks channels-first (N×C×H×W): save x.transpose(0, 2, 3, 1)"
        raise DataError(
            f"{path}: {key!r} has {x.shape[-1]} channels in its last axis; expected 1 or 3 "
            f"(channels-last N×H×W×C), got shape {x.shape}{hint}"
        )
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: {key!r} must be uint8 or float in [0, 1], got {x.dtype}")
    if x.dtype != np.uint8 and x.size:
        if not np.isfinite(x).all():
            raise DataError(f"{path}: {key!r} contains NaN or infinite pixels")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            outside = int(np.count_nonzero((x < 0.0) | (x > 1.0)))
            # repr, not :g, so 1.0000001 is not shown as 1 (rounding error is a common cause)
            part = "" if key == "x" else f"{key!r}: "
            raise DataError(
                f"{path}: {part}float pixels must lie in [0, 1], found {lo!r}..{hi!r} ({outside} of "
                f"{x.size} values outside); store uint8 0..255 or float in [0, 1], not "
                "normalised values (np.clip(x, 0, 1) if they only overshoot by rounding)"
            )
    return x.transpose(0, 3, 1, 2)


def _strings(
    values: np.ndarray | None, key: str, path: Path, length: int | None
) -> np.ndarray | None:
    """A 1-d string array (of ``length`` items when given), or None when absent."""
    if values is None:
        return None
    if values.ndim != 1 or values.dtype.kind not in "US":
        raise DataError(
            f"{path}: {key!r} must be a 1-d array of strings, got {values.dtype}{values.shape}"
        )
    if length is not None and len(values) != length:
        raise DataError(f"{path}: {len(values)} {key} for {length} samples")
    return values.astype(str)


def _check_mask(mask: np.ndarray | None, path: Path, length: int) -> None:
    """``is_poison`` (when present) must be ``length`` booleans or integers 0/1."""
    if mask is None:
        return
    shape_ok = mask.ndim == 1 and len(mask) == length
    kind_ok = mask.dtype == np.bool_ or (
        np.issubdtype(mask.dtype, np.integer) and bool(np.isin(mask, (0, 1)).all())
    )
    if shape_ok and np.issubdtype(mask.dtype, np.integer) and not kind_ok:
        stray = mask[~np.isin(mask, (0, 1))]
        raise DataError(
            f"{path}: 'is_poison' (the ground-truth mask poisonlab reads) must hold 0/1 integers "
            f"or booleans; got {mask.dtype}{mask.shape} holding {stray[0]} "
            f"({len(stray)} of {length} values are neither 0 nor 1)"
        )
    if not (shape_ok and kind_ok):
        raise DataError(
            f"{path}: 'is_poison' (the ground-truth mask poisonlab reads) must be {length} "
            f"booleans (or 0/1 integers), one per image; got {mask.dtype}{mask.shape}"
        )


def load_npz(path: Path, part: str = "train") -> ImageDataset:
    """Load an .npz data set (a single-part source), validating every array it uses."""
    check_part(part, f"{path} (an .npz file)", has_test=False)
    return load_npz_with(path, ())[0]


def load_npz_with(path: Path, extra: Sequence[str]) -> tuple[ImageDataset, dict[str, np.ndarray]]:
    """:func:`load_npz`, plus the arrays named in ``extra`` that the file holds (read from the same
    archive, object arrays refused; absent ones are left out of the dict, checking them is the
    caller's). ``is_poison`` is checked as :func:`load_npz` checks it."""
    if path.is_dir():
        raise DataError(f"{path}: a folder, not an .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _open_error(path, exc) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(_single_npy(path))
    with archive:
        x, y = _read(archive, "x", path), _read(archive, "y", path)
        for key, value in (("x", x), ("y", y)):
            if value is None:
                raise DataError(
                    f"{path}: missing array {key!r} "
                    f"(found: {', '.join(archive.files) or 'no arrays at all'})"
                )
        assert x is not None and y is not None
        images = _images(x, path)
        ids = _strings(_read(archive, "ids", path), "ids", path, len(images))
        names = _strings(_read(archive, "class_names", path), "class_names", path, None)
        _check_mask(_read(archive, "is_poison", path), path, len(images))
        arrays = {key: _read(archive, key, path) for key in extra if key in archive.files}
    y = _labels(y, images, path, "y")
    # without class_names the classes are 0..max(y): checked first, so one stray label of 10⁹
    # cannot make a table of 10⁹ class names
    num_classes = len(names) if names is not None else check_label_range(y, f"{path}: 'y'")
    if y.size and int(y.max()) >= num_classes:
        raise DataError(f"{path}: label {int(y.max())} but only {num_classes} class_names")
    ids = ids if ids is not None else row_ids(path.name, len(y))
    class_names = tuple(names) if names is not None else tuple(map(str, range(num_classes)))
    dataset = _dataset(images, y, class_names, path.stem, ids)
    return dataset, {key: value for key, value in arrays.items() if value is not None}


def _labels(y: np.ndarray, images: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``y`` checked: one integer label >= 0 per image."""
    if y.ndim != 1 or not (y.size == 0 or np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{path}: {key!r} must be a 1-d integer array, got {y.dtype}{y.shape}")
    if len(y) != len(images):
        x = "x" if key == "y" else key[: -len("y")] + "x"
        raise DataError(f"{path}: {len(images)} images in {x!r} but {len(y)} labels in {key!r}")
    if y.size and int(y.min()) < 0:
        raise DataError(f"{path}: negative labels in {key!r} (min {int(y.min())})")
    return y


def _dataset(
    images: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], name: str, ids: np.ndarray
) -> ImageDataset:
    """An ImageDataset of checked N×C×H×W pixels (uint8 scaled by 1/255, or float as stored)."""
    if images.dtype == np.uint8:
        return from_uint8(
            images, y, num_classes=len(class_names), class_names=class_names, name=name, ids=ids
        )
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
        labels=torch.from_numpy(y.astype(np.int64)),
        num_classes=len(class_names),
        class_names=class_names,
        name=name,
        ids=ids,
    )


def npz_part(
    path: Path, arrays: dict[str, np.ndarray], prefix: str, like: ImageDataset
) -> ImageDataset | None:
    """The data set stored beside the main one as ``{prefix}x``, ``{prefix}y`` and
    ``{prefix}ids`` (read by :func:`load_npz_with`), checked as the main one is and with its
    classes; None when the file holds no ``{prefix}x``."""
    x_key, y_key, ids_key = f"{prefix}x", f"{prefix}y", f"{prefix}ids"
    if x_key not in arrays:
        return None
    for key in (y_key, ids_key):
        if key not in arrays:
            raise DataError(f"{path}: {x_key!r} without {key!r}")
    images = _images(arrays[x_key], path, x_key)
    if images.shape[1:] != tuple(like.shape):
        raise DataError(
            f"{path}: {x_key!r} holds images of shape {tuple(images.shape[1:])} (C, H, W); "
            f"'x' holds {tuple(like.shape)}"
        )
    y = _labels(arrays[y_key], images, path, y_key)
    if y.size and int(y.max()) >= like.num_classes:
        raise DataError(
            f"{path}: label {int(y.max())} in {y_key!r} but only {like.num_classes} classes"
        )
    ids = _strings(arrays[ids_key], ids_key, path, len(images))
    assert ids is not None
    return _dataset(images, y, like.class_names, f"{path.stem}:{prefix.rstrip('_')}", ids)
