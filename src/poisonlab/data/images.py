"""Reading single image files with Pillow: one mode, one size, and errors that name the file.

Supported pixel modes: 8-bit grayscale and colour (alpha and palettes included) and 16-bit
grayscale (a 16-bit PNG, or a PGM whose maximum value is above 255), which Pillow opens as
``I;16`` or, from a PGM and in older Pillow versions, ``I`` (0..65535). Pixels come back as
float32 in [0, 1]: 8-bit values divided by 255, 16-bit values by 65535 (never clipped to 8 bits
first). Pillow opens 16-bit colour PNGs and PPMs as 8-bit RGB (the high byte of each value), so
those load at 8-bit precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poisonlab.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".ppm"})
GRAY_MODES = frozenset({"1", "L", "LA"})
GRAY16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
COLOR_MODES = frozenset({"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX"})
SUPPORTED_MODES = "8-bit grayscale or colour, or 16-bit grayscale"
_MAX8 = np.float32(255.0)
_MAX16 = np.float32(65535.0)


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
    if mode not in GRAY_MODES and mode not in GRAY16_MODES and mode not in COLOR_MODES:
        raise DataError(f"{path}: unsupported pixel mode {mode} (use {SUPPORTED_MODES})")
    return mode, (height, width)


def is_gray(mode: str) -> bool:
    """True for grayscale modes: 8-bit (with or without alpha) and 16-bit."""
    return mode in GRAY_MODES or mode in GRAY16_MODES


def read_image(
    path: Path,
    *,
    channels: int,
    size: tuple[int, int],
    box: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Pixels of ``path`` as float32 (channels, height, width) in [0, 1], cropped to ``box`` first.

    ``channels`` is 1 (converted to grayscale) or 3 (RGB; alpha is dropped; 16-bit grayscale is
    repeated in all three). ``box`` is (left, upper, right, lower) in pixels, right and lower
    exclusive. Resizing is bilinear, in 8 bits for 8-bit images and in float for 16-bit ones.
    """
    from PIL import Image

    try:
        with Image.open(path) as opened:
            mode = opened.mode
            deep = mode in GRAY16_MODES
            # Pillow's "L" and "RGB" clip 16-bit values at 255; "F" keeps them
            image = opened.convert("F" if deep else "L" if channels == 1 else "RGB")
            if deep:
                low, high = image.getextrema()
                if low < 0 or high > _MAX16:
                    raise DataError(
                        f"{path}: pixel mode {mode} holds values {low:g}..{high:g}, "
                        f"not 0..65535 (use {SUPPORTED_MODES})"
                    )
            if box is not None:
                image = image.crop(box)
            height, width = size
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32 if deep else np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({exc})") from None
    if deep:
        scaled = pixels / _MAX16
        np.minimum(scaled, 1, out=scaled)  # only a float resize's rounding can pass 65535
        return np.repeat(scaled[None], channels, axis=0)
    scaled = pixels.astype(np.float32)
    scaled /= _MAX8  # the arithmetic of from_uint8, so an image folder and an .npz agree exactly
    return scaled[None] if scaled.ndim == 2 else scaled.transpose(2, 0, 1)
