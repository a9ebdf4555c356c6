"""Reading single image files with Pillow: one mode, one size, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poisonlab.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm"})
GRAY_MODES = frozenset({"1", "L", "LA"})
COLOR_MODES = frozenset({"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX"})


def parse_size(size: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``size`` as (height, width): an int means a square; None stays None."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise DataError(f"size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def probe(path: Path) -> tuple[str, tuple[int, int]]:
    """The pixel mode and (height, width) of image ``path``, read from its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            mode, (width, height) = image.mode, image.size
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    if mode not in GRAY_MODES and mode not in COLOR_MODES:
        raise DataError(f"{path}: unsupported pixel mode {mode} (use 8-bit grayscale or RGB)")
    return mode, (height, width)


def is_gray(mode: str) -> bool:
    """True for 8-bit grayscale modes (with or without alpha)."""
    return mode in GRAY_MODES


def read_image(
    path: Path,
    *,
    channels: int,
    size: tuple[int, int],
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Pixels of ``path`` as uint8 (channels, height, width), optionally cropped to ``box`` first.

    ``channels`` is 1 (converted to grayscale) or 3 (RGB; alpha is dropped). ``box`` is
    (left, upper, right, lower) in pixels, right and lower exclusive. Resizing is bilinear.
    """
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert("L" if channels == 1 else "RGB")
            if box is not None:
                image = image.crop(box)
            height, width = size
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({exc})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
