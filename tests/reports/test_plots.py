"""Figures are real, non-empty PNGs that change with their data; matplotlib stays out of
``import poisonlab`` and of the table code."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from poisonlab.reports import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, 3), axis=0))


def dark_fraction(image: np.ndarray) -> float:
    return float((image.max(axis=2) < 60).mean())


def pixels_of(image: np.ndarray, colour: str, alpha: float = 1.0, tolerance: int = 30) -> int:
    """Pixels within ``tolerance`` (summed over R, G, B) of ``colour`` (hex), drawn at ``alpha``
    over white."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    drawn = alpha * rgb + (1 - alpha) * 255
    return int((np.abs(image.astype(int) - drawn).sum(axis=2) < tolerance).sum())


def halves(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The left and right panels of a two-panel figure."""
    middle = image.shape[1] // 2
    return image[:, :middle], image[:, middle:]


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    truth = np.zeros(200, bool)
    truth[:20] = True
    values = {"a": rng.normal(size=200) + 3 * truth, "b": rng.normal(size=200)}
    values["a"][150:] = np.nan  # not analysed: left out
    return values, truth


def test_curves_and_histograms(scores):
    values, truth = scores
    curves = decode(plots.curves_png(values, truth))
    assert curves.shape[:2] == (420, 1000) and colours(curves) > 50
    # one line per defense in both the ROC and the PR panel, in matplotlib's first two colours
    # (about 1,400 pixels each; the legend's samples alone are a few dozen)
    for panel in halves(curves):
        assert pixels_of(panel, "#1f77b4") > 500 and pixels_of(panel, "#ff7f0e") > 500
    one = decode(plots.histograms_png({"a": values["a"]}, truth))
    two = decode(plots.histograms_png(values, truth))
    assert two.shape[1] > one.shape[1]  # one panel per defense
    assert colours(two) > 50
    # each panel holds the clean and the poison histogram (bars at alpha 0.6: thousands of pixels)
    for panel in halves(two):
        for colour in (plots.CLEAN, plots.POISON):
            assert pixels_of(panel, colour, alpha=0.6) > 1000, colour


def test_curves_without_both_classes_still_draw_the_frame(scores):
    values, truth = scores
    image = decode(plots.curves_png(values, np.zeros_like(truth)))
    assert colours(image) > 10


def test_class_histograms_keep_the_most_flagged_classes():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(20), 10)
    values = rng.normal(size=200)
    flagged = values > 1.0
    names = [str(i) for i in range(20)]
    few = decode(plots.class_histograms_png(values, labels, flagged, names, max_classes=2))
    more = decode(plots.class_histograms_png(values, labels, flagged, names, max_classes=5))
    assert more.shape[0] > few.shape[0]  # 5 panels in 2 rows vs 2 panels in 1 row
    # the two kept are the two most flagged: the figure of those two classes alone (the others
    # not analysed), its bins the same since the two hold the lowest and the highest score
    most = np.isin(labels, [7, 13])
    values[np.flatnonzero(labels == 7)[0]], values[np.flatnonzero(labels == 13)[0]] = 9.0, -9.0
    flagged = most & (values > -0.5)  # 4-8 flags in each of the two, none elsewhere...
    flagged[np.flatnonzero(labels < 7)[::10]] = True  # ...but one in each of classes 0-6
    assert flagged[labels == 7].sum() > 1 and flagged[labels == 13].sum() > 1
    kept = plots.class_histograms_png(values, labels, flagged, names, max_classes=2)
    alone = np.where(most, values, np.nan)
    assert kept == plots.class_histograms_png(alone, labels, flagged, names, max_classes=2)


def _per_class_cases():
    """Inputs drawn in turn on one ClassHistograms: 10 classes (3 × 4 panels) with new scores,
    flags and titles each time, 9 classes (same grid, one panel less), no title, then 2 classes
    (a new grid) and 10 classes again."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), 30)
    names = [f"c{i}" for i in range(10)]
    cases = []
    for k, scale in enumerate((1.0, 50.0, 1e-3)):
        values = rng.normal(size=300) * scale + k
        cases.append((values, labels, values > np.quantile(values, 0.9), names, f"defense {k}"))
    nine = rng.normal(size=300)
    nine[labels == 4] = np.nan  # class 4 not analysed
    cases.append((nine, labels, nine > 1.0, names, "nine"))
    cases.append((rng.normal(size=300), labels, np.zeros(300, bool), names, ""))
    two = np.where(labels < 2, rng.normal(size=300), np.nan)
    cases.append((two, labels, two > 0.5, names, "two"))
    cases.append(cases[0])
    return cases


def test_class_histograms_on_a_reused_figure_equal_new_figures():
    # the report draws one per-class figure per defense on one figure: every PNG must be the
    # bytes a figure of its own gives
    reused = plots.ClassHistograms()
    for values, labels, flagged, names, title in _per_class_cases():
        alone = plots.class_histograms_png(values, labels, flagged, names, title=title)
        assert reused(values, labels, flagged, names, title=title) == alone, title


def test_titles_at_a_fixed_height_draw_what_automatic_titles_draw(scores, monkeypatch):
    # _title gives matplotlib's default title height explicitly (no re-placement per draw);
    # the reference leaves it automatic, as ax.set_title does by default
    values, truth = scores
    labels = np.repeat(np.arange(10), 20)
    flagged = values["b"] > 1.0
    names = [str(i) for i in range(10)]

    def figures() -> list[bytes]:
        return [
            plots.curves_png(values, truth),
            plots.histograms_png(values, truth),
            plots.class_histograms_png(values["b"] * 1e5, labels, flagged, names, title="t"),
            plots.scatter_png(np.c_[values["b"], values["b"] ** 2], labels, truth, title="s"),
        ]

    fixed = figures()
    monkeypatch.setattr(plots, "_title", lambda ax, text, **style: ax.set_title(text, **style))
    assert figures() == fixed


def test_scatter_marks_poisons():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(300, 2))
    labels = rng.integers(0, 3, 300)
    poison = np.zeros(300, bool)
    poison[:60] = True
    plain = decode(plots.scatter_png(points, labels))
    marked = decode(plots.scatter_png(points, labels, poison, means=np.zeros((3, 2)),
                                      targets=points[:2]))  # fmt: skip
    assert dark_fraction(marked) > dark_fraction(plain)  # the black crosses
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        plots.scatter_png(rng.normal(size=(10, 3)), labels[:10])


def test_image_grid_with_and_without_heatmaps():
    rng = np.random.default_rng(3)
    images = rng.random((5, 3, 8, 8)).astype(np.float32)
    alone = decode(plots.image_grid_png(images, [f"#{i}" for i in range(5)]))
    paired = decode(plots.image_grid_png(images, ["x"] * 5, heatmaps=rng.normal(size=(5, 8, 8)),
                                         highlight=[True, False, True, False, False]))  # fmt: skip
    assert colours(alone) > 100 and colours(paired) > 100
    gray = decode(plots.image_grid_png(images[:, :1], ["g"] * 5))
    assert colours(gray) > 20
    # beside grayscale images, only the relevance tiles (bwr) hold saturated blue and red:
    # about 1,800 pixels of each for these maps
    maps = plots.image_grid_png(images[:, :1], ["g"] * 5, heatmaps=rng.normal(size=(5, 8, 8)))
    for colour in ("#0000ff", "#ff0000"):
        assert pixels_of(decode(maps), colour, tolerance=60) > 500, colour
        assert pixels_of(gray, colour, tolerance=60) == 0, colour
    # highlighted captions are red: the figure differs from the plain one only in caption
    # pixels, grey there and red here
    plain = decode(plots.image_grid_png(images, ["x"] * 5)).astype(int)
    marked = decode(plots.image_grid_png(images, ["x"] * 5, highlight=[True] + [False] * 4))
    caption = (marked != plain).any(axis=2)
    assert caption.sum() > 20
    red, grey = marked.astype(int)[caption], plain[caption]
    redness = red[:, 0] - red[:, 1:].max(axis=1)  # antialiased edges are faintly red
    assert (redness > 0).all() and redness.max() > 100
    assert (grey == grey[:, :1]).all()


def test_examples_rows():
    rng = np.random.default_rng(4)
    rows = {"base": rng.random((3, 1, 8, 8)), "poison": rng.random((3, 1, 8, 8))}
    two = decode(plots.examples_png(rows, {"base": np.arange(3)}))
    three = decode(plots.examples_png({**rows, "target": rng.random((3, 1, 8, 8))}))
    assert three.shape[0] > two.shape[0]  # one row per kind


def test_matplotlib_is_not_imported_by_the_package_or_the_tables():
    code = (
        "import sys, poisonlab, poisonlab.reports.tables, poisonlab.reports.writers, "
        "poisonlab.reports.paper_tables, poisonlab.cli.main\n"
        "print('matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
