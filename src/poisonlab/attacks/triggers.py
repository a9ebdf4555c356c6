"""Backdoor triggers as pure tensor functions: where a trigger goes and what it writes there.

A trigger is a small *stamp* (an h×w patch that sets or shifts some pixels) pasted at one origin
per image. Every pixel outside the stamp's mask is returned bit-identical; inputs are never
modified in place. Coordinates are (row, column) with (0, 0) the top-left pixel, and ``offset``
is the gap in pixels between the stamp and the image edges of its corner.

Kinds (:class:`Trigger`):

- ``pattern``: the BadNets MNIST four-pixel pattern as in ART's ``add_pattern_bd`` with distance
  d = 2: pixels (H-d, W-d), (H-d-1, W-d-1), (H-d, W-d-2), (H-d-2, W-d) set to the maximum value
  on all channels. Its 3×3 bounding box ends at (H-2, W-2), i.e. ``offset = d - 1 = 1``.
  docs/methods.md#triggers.
- ``square``: a solid s×s patch, by default the CIFAR-10 4×4 white square 1 px from the bottom
  and right edges (docs/methods.md#triggers, [choice]).
- ``sticker``: a solid s×s patch, by default Schulth et al. 2022's 3×3 yellow-green RGB
  (245, 255, 0) at a random position inside a 10×15 (rows × columns) window centred in the image
  (docs/methods.md#triggers).
- ``checkerboard``: Turner et al.'s 3×3 ± pattern (MadryLab ``poison_attack.py``), full amplitude
  (+ → 1, − → 0) or reduced amplitude amp/255 added (+) or subtracted (−) on all channels with
  clipping to [0, 1]. Its lower-right pixel sits ``offset`` px from the bottom/right edges
  (Turner: 0; Schulth et al. 2022: 10). Test-time triggers use full amplitude (Schulth et al. 2022
  §5.1).

Colours are RGB integers in 0..255. On 1-channel images a colour becomes its ITU-R BT.601
luminance round(0.299 R + 0.587 G + 0.114 B), or the ``gray`` value when one is given, so every
stamped pixel stays a multiple of 1/255 and poisoned sets store losslessly as uint8.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from numbers import Integral
from typing import Any

import numpy as np
import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.validation import (
    ConstraintList,
    Interval,
    Items,
    Options,
    check_param,
    validate_params,
)

KINDS = ("pattern", "square", "sticker", "checkerboard")
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
POSITIONS = (*CORNERS, "random")
WHITE = (255, 255, 255)
YELLOW_GREEN = (245, 255, 0)
SEED004_WINDOW = (10, 15)
SEED004_AMPLITUDES = (32, 64, 128, 255)

PATTERN_MASK = torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=torch.bool)
"""ART's four-pixel pattern inside its 3×3 bounding box (image orientation, top row first)."""

CHECKERBOARD_SIGNS = torch.tensor([[-1, -1, 1], [-1, 1, -1], [1, -1, 1]], dtype=torch.int8)
"""Turner's 3×3 sign mask in image orientation. By (row from the bottom, column from the right):
row 0 = (+, −, +), row 1 = (−, +, −), row 2 = (+, −, −) (docs/methods.md#triggers)."""


@dataclass(frozen=True, eq=False)
class Stamp:
    """What a trigger writes in its h×w patch.

    Parameters
    ----------
    values : Tensor of shape (C, h, w)
        New pixel values (``additive=False``) or shifts added then clipped to [0, 1].
    mask : Tensor of shape (h, w), bool
        Pixels the stamp touches; the others keep the image's value.
    additive : bool
    """

    values: Tensor
    mask: Tensor
    additive: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of the patch."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])


def paste(images: Tensor, stamp: Stamp, rows: Tensor, cols: Tensor) -> Tensor:
    """A copy of ``images`` (N, C, H, W) with ``stamp`` whose top-left pixel is at (rows[i],
    cols[i]).

    ``rows`` and ``cols`` are int64 tensors of shape (N,). Only the masked pixels of each patch
    change; the dtype of ``images`` is kept. Raises ConfigError when a patch leaves the image.
    """
    n, c, height, width = images.shape
    h, w = stamp.shape
    if stamp.values.shape != (c, h, w):
        raise ConfigError(f"stamp has {tuple(stamp.values.shape)} values for {c}-channel images")
    rows, cols = rows.long().reshape(n), cols.long().reshape(n)
    if n and (
        int(rows.min()) < 0
        or int(cols.min()) < 0
        or int(rows.max()) + h > height
        or int(cols.max()) + w > width
    ):
        raise ConfigError(f"a {h}×{w} trigger at these positions leaves the {height}×{width} image")
    out = images.clone()
    if n == 0:
        return out
    local_r, local_c = stamp.mask.nonzero(as_tuple=True)  # (k,) each
    r = (rows[:, None] + local_r[None, :]).reshape(-1)  # (N·k,)
    col = (cols[:, None] + local_c[None, :]).reshape(-1)
    sample = torch.arange(n).repeat_interleave(len(local_r))
    values = stamp.values[:, local_r, local_c].T.to(images.dtype).repeat(n, 1)  # (N·k, C)
    if stamp.additive:
        values = (out[sample, :, r, col] + values).clamp(0.0, 1.0)
    out[sample, :, r, col] = values
    return out


def corner_origin(
    image_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    corner: str,
    offset: int,
    *,
    notes: Mapping[str, str] | None = None,
) -> tuple[int, int]:
    """Top-left (row, col) of an h×w patch ``offset`` px from the edges of ``corner``.

    Raises ConfigError naming ``position=`` and ``offset=`` when the patch does not fit;
    ``notes`` adds a remark after a parameter ("the square trigger's default").
    """
    notes = notes or {}
    (height, width), (h, w) = image_hw, patch_hw
    if corner not in CORNERS:
        raise ConfigError(
            f"`position={corner!r}` is not a corner: expected one of {', '.join(CORNERS)}"
        )
    row = height - h - offset if corner.startswith("bottom") else offset
    col = width - w - offset if corner.endswith("right") else offset
    if h > height or w > width:
        raise ConfigError(f"a {h}×{w} trigger does not fit {height}×{width} images")
    most = min(height - h, width - w)  # the largest gap that keeps the patch inside, any corner
    if not 0 <= offset <= most:
        raise ConfigError(
            f"`offset={offset}`{_aside(notes, 'offset')} puts the {h}×{w} trigger outside "
            f"{height}×{width} images at `position={corner!r}`{_aside(notes, 'position')}: "
            f"expected an offset in [0, {most}]"
        )
    return row, col


def _aside(notes: Mapping[str, str], name: str) -> str:
    """`` (the square trigger's default)`` after a parameter the caller left out, else ""."""
    return f" ({notes[name]})" if name in notes else ""


def random_origins(
    n: int,
    image_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    window: tuple[int, int],
    *,
    generator: torch.Generator,
    notes: Mapping[str, str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-left rows and cols (N,) of patches drawn uniformly so each lies inside ``window``.

    The window (rows × columns) is centred in the image (top = (H - wh) // 2). Raises
    ConfigError naming ``window=`` when the window does not fit the image or the patch does not
    fit the window; ``notes`` adds a remark after a parameter.
    """
    note = (notes or {}).get("window")
    said = f"`window={tuple(window)}` (rows, cols{f'; {note}' if note else ''})"
    (height, width), (h, w), (wh, ww) = image_hw, patch_hw, window
    if wh > height or ww > width:
        raise ConfigError(
            f"{said} does not fit {height}×{width} images: "
            f"expected at most ({height}, {width}), or a corner `position`"
        )
    if h > wh or w > ww:
        raise ConfigError(
            f"{said} is smaller than the {h}×{w} trigger: expected at least ({h}, {w})"
        )
    top, left = (height - wh) // 2, (width - ww) // 2
    rows = torch.randint(top, top + wh - h + 1, (n,), generator=generator)
    cols = torch.randint(left, left + ww - w + 1, (n,), generator=generator)
    return rows, cols


def luminance(color: tuple[int, int, int]) -> int:
    """ITU-R BT.601 luma of an RGB colour, rounded to an integer in 0..255."""
    r, g, b = color
    return round(0.299 * r + 0.587 * g + 0.114 * b)


TRIGGER_CONSTRAINTS: dict[str, ConstraintList] = {
    "trigger": [Options(KINDS)],
    "size": [None, Interval(Integral, 1, 16)],
    "color": [
        None,
        Items(Interval(Integral, 0, 255), length=3, what="(R, G, B): 3 integers in [0, 255]"),
    ],
    "gray": [None, Interval(Integral, 0, 255)],
    "position": [None, Options(POSITIONS)],
    "offset": [None, Interval(Integral, 0, 4096)],
    "window": [
        None,
        Items(Interval(Integral, 1, 4096), length=2, what="(rows, cols): 2 integers in [1, 4096]"),
    ],
    "amplitude": [None, Interval(Integral, 1, 255)],
}
"""Each trigger option on its own (the keywords attacks take; ``trigger`` is the kind). Which
options apply to which kind, and their defaults, are checked by :class:`Trigger`."""


@dataclass(frozen=True)
class Trigger:
    """A trigger description; ``None`` fields take the kind's default, resolved on construction.

    Parameters
    ----------
    kind : {"pattern", "square", "sticker", "checkerboard"}
    size : int in [1, 16]
        Side s of square and sticker patches (defaults 4 and 3); pattern and checkerboard are 3×3.
    color : (R, G, B) integers in 0..255
        Colour of square (default white) and sticker (default yellow-green (245, 255, 0)).
    gray : int in 0..255 or None
        Value used instead of the colour's luminance on 1-channel images.
    position : {"bottom-right", "bottom-left", "top-right", "top-left", "random"}
        A corner (default for pattern, square, checkerboard) or uniformly random inside
        ``window`` (default for sticker), drawn per image from the generator given to :meth:`apply`.
    offset : int >= 0
        Gap in pixels to the corner's edges (pattern 1 = ART distance 2, square 1,
        checkerboard 0 = Turner; Schulth et al. 2022 uses 10). Only for corner positions.
    window : (rows, cols)
        Centred window for random positions (default 10×15, Schulth et al. 2022). Only for
        ``random``.
    amplitude : int in [1, 255]
        Checkerboard amplitude on the 0..255 scale; 255 is full amplitude (+ → 1, − → 0),
        smaller values are added/subtracted with clipping (Schulth et al. 2022: 32, 64, 128).
    """

    kind: str = "pattern"
    size: int | None = None
    color: tuple[int, int, int] | None = None
    gray: int | None = None
    position: str | None = None
    offset: int | None = None
    window: tuple[int, int] | None = None
    amplitude: int | None = None

    def __post_init__(self) -> None:
        kind = check_param("", "trigger", self.kind, TRIGGER_CONSTRAINTS["trigger"])
        options = {k: getattr(self, k) for k in TRIGGER_CONSTRAINTS if k != "trigger"}
        given = validate_params("trigger", TRIGGER_CONSTRAINTS, options)
        solid = kind in ("square", "sticker")
        fixed = "" if solid else f"the {kind} trigger"
        if not solid:
            if given["size"] not in (None, 3):
                raise ConfigError(f"{fixed} is 3×3; size applies to square and sticker")
            for name in ("color", "gray"):
                if given[name] is not None:
                    raise ConfigError(
                        f"{fixed} uses the maximum value; {name} applies to square and sticker"
                    )
        if kind != "checkerboard" and given["amplitude"] is not None:
            raise ConfigError("amplitude applies to the checkerboard trigger only")
        size = given["size"] if given["size"] is not None else {"square": 4}.get(kind, 3)
        color = None
        if solid:
            color = given["color"] or (YELLOW_GREEN if kind == "sticker" else WHITE)
        position = given["position"] or ("random" if kind == "sticker" else "bottom-right")
        offset, window = given["offset"], given["window"]
        default = "" if given["position"] else f" (the {kind} trigger's default)"
        if position == "random":
            if offset is not None:
                raise ConfigError(
                    f"`offset={offset}` applies to a corner `position`, not "
                    f"`position='random'`{default}: expected no offset, or a corner "
                    f"({', '.join(CORNERS)})"
                )
            window = window or SEED004_WINDOW
        else:
            if window is not None:
                raise ConfigError(
                    f"`window={tuple(window)}` applies to `position='random'` only, not "
                    f"`position={position!r}`{default}: expected no window, or "
                    "`position='random'`"
                )
            offset = offset if offset is not None else (0 if kind == "checkerboard" else 1)
        defaulted = {
            name for name in ("size", "position", "offset", "window") if given[name] is None
        }
        # not a field: equality, repr and to_params stay the resolved trigger's
        object.__setattr__(self, "_notes", {n: f"the {kind} trigger's default" for n in defaulted})
        amplitude = None
        if kind == "checkerboard":
            amplitude = 255 if given["amplitude"] is None else given["amplitude"]
        for name, value in (
            ("kind", kind),
            ("size", size),
            ("color", color),
            ("gray", given["gray"]),
            ("position", position),
            ("offset", offset),
            ("window", window),
            ("amplitude", amplitude),
        ):
            object.__setattr__(self, name, value)

    @property
    def patch_shape(self) -> tuple[int, int]:
        """(h, w) of the stamp."""
        assert self.size is not None
        return self.size, self.size

    def to_params(self) -> dict[str, Any]:
        """The resolved fields, named as the attack constructors take them (``kind`` →
        ``trigger``)."""
        params = asdict(self)
        return {"trigger": params.pop("kind"), **params}

    def stamp(self, channels: int, *, full_amplitude: bool = False) -> Stamp:
        """The patch for ``channels``-channel images (full amplitude on request, e.g. at test
        time)."""
        h, w = self.patch_shape
        if self.kind == "pattern":
            return Stamp(torch.ones(channels, 3, 3), PATTERN_MASK.clone())
        if self.kind == "checkerboard":
            signs = CHECKERBOARD_SIGNS.float().expand(channels, 3, 3)
            everywhere = torch.ones(3, 3, dtype=torch.bool)
            if full_amplitude or self.amplitude == 255:
                return Stamp((signs > 0).float(), everywhere)
            assert self.amplitude is not None
            return Stamp(signs * (self.amplitude / 255.0), everywhere, additive=True)
        assert self.color is not None
        if channels == 3:
            value = torch.tensor(self.color, dtype=torch.float32) / 255.0
        elif channels == 1:
            gray = self.gray if self.gray is not None else luminance(self.color)
            value = torch.tensor([gray / 255.0])
        else:
            raise ConfigError(f"coloured triggers need 1- or 3-channel images, got {channels}")
        return Stamp(
            value[:, None, None].expand(channels, h, w).clone(), torch.ones(h, w, dtype=torch.bool)
        )

    def check_fits(self, image_shape: tuple[int, int, int]) -> None:
        """Raise ConfigError when this trigger cannot be placed on (C, H, W) images."""
        _, height, width = image_shape
        notes: dict[str, str] = getattr(self, "_notes", {})
        h, w = self.patch_shape
        if (h > height or w > width) and self.kind in ("square", "sticker"):
            raise ConfigError(
                f"`size={self.size}`{_aside(notes, 'size')} makes a {h}×{w} trigger, larger than "
                f"{height}×{width} images: expected a size in [1, {min(height, width)}]"
            )
        if self.position == "random":
            assert self.window is not None
            random_origins(
                0,
                (height, width),
                self.patch_shape,
                self.window,
                generator=torch.Generator(),
                notes=notes,
            )
        else:
            assert self.offset is not None and self.position is not None
            corner_origin(
                (height, width), self.patch_shape, self.position, self.offset, notes=notes
            )
        if self.kind in ("square", "sticker") and image_shape[0] not in (1, 3):
            raise ConfigError(
                f"coloured triggers need 1- or 3-channel images, got {image_shape[0]}"
            )

    def origins(
        self, n: int, image_hw: tuple[int, int], *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-left rows and cols (N,) of the patch for ``n`` images."""
        if self.position == "random":
            if generator is None:
                raise ConfigError("random trigger positions need a generator")
            assert self.window is not None
            return random_origins(n, image_hw, self.patch_shape, self.window, generator=generator)
        assert self.offset is not None and self.position is not None
        row, col = corner_origin(image_hw, self.patch_shape, self.position, self.offset)
        return torch.full((n,), row, dtype=torch.long), torch.full((n,), col, dtype=torch.long)

    def apply(
        self,
        images: Tensor,
        *,
        generator: torch.Generator | None = None,
        full_amplitude: bool = False,
    ) -> Tensor:
        """``images`` (N, C, H, W) in [0, 1] with the trigger pasted on each; a new tensor.

        ``generator`` draws random positions (required for ``position="random"``);
        ``full_amplitude`` forces the full-amplitude checkerboard (test-time triggers).
        """
        n, c, height, width = images.shape
        self.check_fits((c, height, width))
        rows, cols = self.origins(n, (height, width), generator=generator)
        return paste(images, self.stamp(c, full_amplitude=full_amplitude), rows, cols)


@dataclass(frozen=True, eq=False)
class TriggeredSet:
    """Triggered test images labelled with the attacker's labels, and their true classes.

    Parameters
    ----------
    data : ImageDataset
        Triggered images; ``data.labels`` are the attacker's desired labels, so the accuracy on
        ``data`` is the attack success rate.
    source_labels : Tensor of shape (N,), int64
        The true class of each image before triggering (for per-class ASR and MASR).
    target : int or None
        The single attacker label, or None for all-to-all label maps.
    """

    data: ImageDataset
    source_labels: Tensor
    target: int | None = None


def trigger_test_set(
    test: ImageDataset,
    trigger: Trigger,
    attacker_label: Tensor,
    *,
    tag: str,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> TriggeredSet:
    """Trigger (at full amplitude) every test image whose class c has ``attacker_label[c] >= 0``.

    ``attacker_label`` is an int64 tensor of shape (K,) mapping each true class to the label the
    attacker wants (-1: leave that class out). Ids become ``f"{id}+{tag}"``.
    """
    keep = attacker_label[test.labels] >= 0
    chosen = test.subset(keep)
    images = trigger.apply(chosen.images, generator=generator, full_amplitude=True)
    data = ImageDataset(
        images,
        attacker_label[chosen.labels],
        test.num_classes,
        test.class_names,
        f"{test.name}+{tag}",
        np.asarray([f"{i}+{tag}" for i in chosen.ids]),
    )
    return TriggeredSet(data, chosen.labels.clone(), target)
