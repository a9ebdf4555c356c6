"""Triggers land exactly where specified, write the specified values, and touch nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.attacks.triggers import (
    Trigger,
    corner_origin,
    luminance,
    random_origins,
    trigger_test_set,
)
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.seeding import make_generator


def _noise(n: int = 4, c: int = 1, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    # interior values (never exactly 0 or 1) so every written pixel is visible as a change
    return 0.1 + 0.8 * torch.rand(n, c, h, w, generator=make_generator(seed))


def _changed(before: torch.Tensor, after: torch.Tensor) -> set[tuple[int, int]]:
    """(row, col) pixels changed in any image or channel."""
    diff = (before != after).any(dim=(0, 1))
    return {(int(r), int(c)) for r, c in diff.nonzero()}


def test_pattern_is_arts_four_pixels_at_distance_two() -> None:
    x = _noise(h=28, w=28)
    y = Trigger("pattern").apply(x)
    h, w, d = 28, 28, 2
    expected = {(h - d, w - d), (h - d - 1, w - d - 1), (h - d, w - d - 2), (h - d - 2, w - d)}
    assert _changed(x, y) == expected
    for r, c in expected:
        assert torch.all(y[:, :, r, c] == 1.0)


def test_pattern_matches_art_add_pattern_bd() -> None:
    perturbations = pytest.importorskip("art.attacks.poisoning.perturbations")
    x = _noise(n=3, c=3, h=12, w=10)
    ours = Trigger("pattern").apply(x).numpy()
    theirs = perturbations.add_pattern_bd(x.numpy(), distance=2, pixel_value=1, channels_first=True)
    assert np.array_equal(ours, theirs)


def test_cifar_square_is_4x4_white_one_pixel_from_the_corner() -> None:
    x = _noise(c=3, h=32, w=32)
    y = Trigger("square").apply(x)
    expected = {(r, c) for r in range(27, 31) for c in range(27, 31)}
    assert _changed(x, y) == expected
    assert torch.all(y[:, :, 27:31, 27:31] == 1.0)


def test_untouched_pixels_are_bit_identical_and_input_is_not_modified() -> None:
    x = _noise(c=3, h=16, w=16)
    kept = x.clone()
    trigger = Trigger("sticker", size=2, position="top-left", offset=3)
    y = trigger.apply(x)
    assert torch.equal(x, kept)
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[3:5, 3:5] = False
    assert torch.equal(y[:, :, mask], x[:, :, mask])


@pytest.mark.parametrize(
    ("corner", "origin"),
    [
        ("bottom-right", (10, 11)),
        ("bottom-left", (10, 2)),
        ("top-right", (2, 11)),
        ("top-left", (2, 2)),
    ],
)
def test_corner_positions_with_offset(corner: str, origin: tuple[int, int]) -> None:
    assert corner_origin((15, 16), (3, 3), corner, 2) == origin
    x = _noise(h=15, w=16)
    y = Trigger("square", size=3, position=corner, offset=2).apply(x)
    r, c = origin
    assert _changed(x, y) == {(r + i, c + j) for i in range(3) for j in range(3)}


def test_sticker_colour_on_rgb_and_luminance_on_grayscale() -> None:
    rgb = Trigger("sticker", position="bottom-right").apply(_noise(c=3, h=8, w=8))
    assert torch.equal(rgb[0, :, 6, 6], torch.tensor([245, 255, 0]) / 255.0)
    assert luminance((245, 255, 0)) == round(0.299 * 245 + 0.587 * 255)
    gray = Trigger("sticker", position="bottom-right").apply(_noise(c=1, h=8, w=8))
    assert torch.all(gray[:, 0, 4:7, 4:7] == luminance((245, 255, 0)) / 255.0)
    fixed = Trigger("sticker", gray=40, position="bottom-right").apply(_noise(c=1, h=8, w=8))
    assert torch.all(fixed[:, 0, 4:7, 4:7] == 40 / 255.0)


def test_random_positions_stay_in_the_centred_window_and_follow_the_generator() -> None:
    rows, cols = random_origins(500, (32, 32), (3, 3), (10, 15), generator=make_generator(1))
    # window rows 11..20, cols 8..22: a 3×3 sticker's origin lies in rows 11..18, cols 8..20
    assert int(rows.min()) == 11 and int(rows.max()) == 18
    assert int(cols.min()) == 8 and int(cols.max()) == 20
    trigger = Trigger("sticker")
    x = _noise(n=50, c=3, h=32, w=32)
    a = trigger.apply(x, generator=make_generator(5))
    b = trigger.apply(x, generator=make_generator(5))
    c = trigger.apply(x, generator=make_generator(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[11:21, 8:23] = False
    assert torch.equal(a[:, :, outside], x[:, :, outside])
    assert int((a != x).any(1).flatten(1).sum(1).max()) == 9  # one whole 3×3 sticker per image


def test_random_positions_need_a_generator_and_a_window_that_fits() -> None:
    with pytest.raises(ConfigError, match="generator"):
        Trigger("sticker").apply(_noise(c=3, h=32, w=32))
    with pytest.raises(ConfigError, match=r"`window=\(10, 15\)` .* does not fit 8×8"):
        Trigger("sticker").apply(_noise(h=8, w=8), generator=make_generator(0))


MADRY_BOTTOM_RIGHT = [
    ((-1, -1), 1), ((-1, -2), -1), ((-1, -3), 1),
    ((-2, -1), -1), ((-2, -2), 1), ((-2, -3), -1),
    ((-3, -1), 1), ((-3, -2), -1), ((-3, -3), -1),
]  # fmt: skip
"""MadryLab label-consistent-backdoor-code, poison_attack.py, trigger "bottom-right"."""


@pytest.mark.parametrize("offset", [0, 10])
def test_checkerboard_full_amplitude_matches_turners_mask(offset: int) -> None:
    x = _noise(c=3, h=32, w=32)
    y = Trigger("checkerboard", offset=offset).apply(x)
    expected = {}
    for (dr, dc), sign in MADRY_BOTTOM_RIGHT:
        expected[(32 + dr - offset, 32 + dc - offset)] = 1.0 if sign > 0 else 0.0
    assert _changed(x, y) == set(expected)
    for (r, c), value in expected.items():
        assert torch.all(y[:, :, r, c] == value)


@pytest.mark.parametrize("amplitude", [32, 64, 128])
def test_reduced_amplitude_changes_pixels_by_at_most_amp(amplitude: int) -> None:
    x = torch.rand(20, 3, 16, 16, generator=make_generator(2))  # includes values near 0 and 1
    y = Trigger("checkerboard", amplitude=amplitude, offset=1).apply(x)
    delta = (y - x)[:, :, 12:15, 12:15]
    assert float(delta.abs().max()) <= amplitude / 255 + 1e-6
    signs = torch.tensor([[-1, -1, 1], [-1, 1, -1], [1, -1, 1]], dtype=torch.float32)
    expected = (x[:, :, 12:15, 12:15] + signs * amplitude / 255).clamp(0, 1)
    assert torch.allclose(y[:, :, 12:15, 12:15], expected, atol=1e-7)
    assert _changed(x, y) <= {(r, c) for r in range(12, 15) for c in range(12, 15)}
    full = Trigger("checkerboard", amplitude=amplitude, offset=1).apply(x, full_amplitude=True)
    assert torch.equal(full, Trigger("checkerboard", offset=1).apply(x))


def test_amplitude_255_is_full_amplitude() -> None:
    x = _noise(c=3, h=8, w=8)
    assert torch.equal(
        Trigger("checkerboard", amplitude=255).apply(x), Trigger("checkerboard").apply(x)
    )


def test_dtype_is_preserved() -> None:
    x = _noise(h=8, w=8).double()
    assert Trigger("pattern").apply(x).dtype == torch.float64
    assert Trigger("checkerboard", amplitude=64).apply(x).dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "star"}, "trigger must be one of 'pattern', .*, got 'star'"),
        ({"kind": "square", "size": 0}, r"size must be an integer in \[1, 16\]"),
        (
            {"kind": "square", "color": (300, 0, 0)},
            r"color must be \(R, G, B\): 3 integers in \[0, 255\]",
        ),
        ({"kind": "square", "color": (1, 2)}, "3 integers"),
        ({"kind": "pattern", "size": 4}, "3×3"),
        ({"kind": "pattern", "color": (1, 2, 3)}, "color applies to square and sticker"),
        ({"kind": "square", "amplitude": 64}, "checkerboard trigger only"),
        ({"kind": "checkerboard", "amplitude": 0}, r"amplitude must be an integer in \[1, 255\]"),
        (
            {"kind": "sticker", "offset": 2},
            r"`offset=2` applies to a corner `position`, not `position='random'` \(the sticker "
            r"trigger's default\): expected no offset, or a corner \(bottom-right, ",
        ),
        (
            {"kind": "sticker", "position": "random", "offset": 0},
            r"`offset=0` applies to a corner `position`, not `position='random'`: expected",
        ),
        (
            {"kind": "square", "window": (4, 4)},
            r"`window=\(4, 4\)` applies to `position='random'` only, not "
            r"`position='bottom-right'` \(the square trigger's default\): expected no window, "
            r"or `position='random'`",
        ),
        (
            {"kind": "square", "position": "top-left", "window": [4, 4]},
            r"`window=\(4, 4\)` applies to `position='random'` only, not `position='top-left'`:",
        ),
        ({"kind": "square", "position": "middle"}, "position must be one of .*, got 'middle'"),
    ],
)
def test_bad_trigger_parameters_name_the_parameter(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Trigger(**kwargs)


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (
            Trigger("checkerboard", offset=10),
            r"^`offset=10` puts the 3×3 trigger outside 8×8 images at `position='bottom-right'` "
            r"\(the checkerboard trigger's default\): expected an offset in \[0, 5\]$",
        ),
        (
            Trigger("square", size=8, position="top-left"),
            r"^`offset=1` \(the square trigger's default\) puts the 8×8 trigger outside 8×8 "
            r"images at `position='top-left'`: expected an offset in \[0, 0\]$",
        ),
        (
            Trigger("square", size=9),
            r"^`size=9` makes a 9×9 trigger, larger than 8×8 images: expected a size in \[1, 8\]$",
        ),
        (
            Trigger("sticker", window=(9, 6)),
            r"^`window=\(9, 6\)` \(rows, cols\) does not fit 8×8 images: expected at most "
            r"\(8, 8\), or a corner `position`$",
        ),
        (
            Trigger("sticker", size=5, window=(4, 6)),
            r"^`window=\(4, 6\)` \(rows, cols\) is smaller than the 5×5 trigger: expected at "
            r"least \(5, 5\)$",
        ),
    ],
)
def test_a_trigger_that_does_not_fit_names_the_parameter_value_and_what_fits(
    trigger: Trigger, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        trigger.apply(_noise(h=8, w=8), generator=make_generator(0))


def test_defaults_are_resolved() -> None:
    assert Trigger("square").to_params() == {
        "trigger": "square",
        "size": 4,
        "color": (255, 255, 255),
        "gray": None,
        "position": "bottom-right",
        "offset": 1,
        "window": None,
        "amplitude": None,
    }
    sticker = Trigger("sticker")
    assert (sticker.size, sticker.color, sticker.position, sticker.window) == (
        3,
        (245, 255, 0),
        "random",
        (10, 15),
    )
    assert Trigger("checkerboard").offset == 0 and Trigger("checkerboard").amplitude == 255


def test_trigger_test_set_labels_and_ids() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    test = ImageDataset(_noise(n=6, h=8, w=8), labels, 3, name="t")
    mapping = torch.tensor([2, 2, -1])
    triggered = trigger_test_set(
        test, Trigger("checkerboard", amplitude=32), mapping, tag="x", target=2
    )
    assert triggered.data.labels.tolist() == [2, 2, 2, 2]
    assert triggered.source_labels.tolist() == [0, 1, 0, 1]
    assert list(triggered.data.ids) == ["t#0+x", "t#1+x", "t#3+x", "t#4+x"]
    # test-time triggers are full amplitude: trigger pixels are exactly 0 or 1
    patch = triggered.data.images[:, :, 5:8, 5:8]
    assert torch.all((patch == 0) | (patch == 1))
