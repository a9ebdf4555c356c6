"""Report figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

Why bytes: the HTML page embeds every figure as base64, so a report is one file that opens
anywhere. matplotlib is imported inside each function (``import poisonlab`` stays light) and
``pyplot`` is never used, so no global backend or figure state is touched: a figure is a
:class:`matplotlib.figure.Figure` printed by ``FigureCanvasAgg`` and dropped.

Layout: every figure here places its panels at fixed positions (margins and gaps in inches,
:func:`_panels`) instead of matplotlib's constrained layout, which measures every text of every
panel on each draw; it was about half of a report figure's drawing time, and the report of a
scan draws one per-class figure and one image grid per defense.  Histograms are drawn as filled
step outlines (``Axes.stairs``, one artist per series) rather than one rectangle per bin.

Conventions: scores are *higher = more suspicious* (every detector's sign); NaN scores mark
samples a defense did not analyse and are left out of every plot. Images are (N, C, H, W) floats
in [0, 1] with C in {1, 3}; heatmaps are (N, H, W) relevance maps, drawn with a diverging map
centred on zero (red = evidence for the class, blue = against).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from poisonlab.metrics.detection import auroc, average_precision, pr_points, roc_points

CLEAN, POISON, FLAGGED = "#3b7dd8", "#d8453b", "#d8453b"


def _figure(width: float, height: float) -> Any:
    """A standalone Figure on the Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _panels(
    width: float,
    height: float,
    rows: int,
    cols: int,
    *,
    left: float,
    right: float,
    bottom: float,
    top: float,
    wgap: float,
    hgap: float,
    **kwargs: Any,
) -> tuple[Any, np.ndarray]:
    """A Figure of ``width`` × ``height`` inches with a ``rows`` × ``cols`` grid of axes at
    fixed positions: ``left``/``right``/``bottom``/``top`` margins and the gaps between panels
    in inches (room for the titles and tick labels each figure draws).  Returns the figure and
    the axes, raveled row by row; ``kwargs`` go to ``Figure.subplots``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    panel_w = max((width - left - right - (cols - 1) * wgap) / cols, 0.1)
    panel_h = max((height - bottom - top - (rows - 1) * hgap) / rows, 0.1)
    spec = {
        "left": left / width,
        "right": 1.0 - right / width,
        "bottom": bottom / height,
        "top": 1.0 - top / height,
        "wspace": wgap / panel_w,
        "hspace": hgap / panel_h,
    }
    axes = figure.subplots(rows, cols, squeeze=False, gridspec_kw=spec, **kwargs)
    return figure, np.asarray(axes).ravel()


def _stairs(ax: Any, values: np.ndarray, bins: Any, **style: Any) -> None:
    """A histogram of ``values`` drawn as one filled step outline (``Axes.stairs``)."""
    counts, edges = np.histogram(values, bins=bins, density=style.pop("density", False))
    ax.stairs(counts, edges, fill=True, **style)


def _png(figure: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(ax: Any, text: str, **style: Any) -> None:
    """``ax.set_title`` at its default height (y = 1), given explicitly.

    Why: a title left at matplotlib's automatic height is re-placed on every draw, measuring the
    x axis and the y axis' offset text of the panel (a second tick layout per panel) in case they
    reach above the axes. No figure here puts ticks, labels or an offset text there, so the
    automatic height is always 1 and the PNG is byte-identical (tests/reports/test_plots.py).
    """
    ax.set_title(text, y=1.0, **style)


def _analysed(is_poison: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and scores of the analysed samples (finite scores)."""
    keep = np.isfinite(scores)
    return np.asarray(is_poison, dtype=bool)[keep], np.asarray(scores, dtype=np.float64)[keep]


def _grid(n: int, columns: int) -> tuple[int, int]:
    """Rows and columns of a panel grid for ``n`` panels, at most ``columns`` wide."""
    cols = max(1, min(columns, n))
    return max(1, math.ceil(n / cols)), cols


def curves_png(scores: Mapping[str, np.ndarray], is_poison: np.ndarray) -> bytes:
    """ROC (left) and precision–recall (right), one line per defense, AUROC / AP in the legend.

    Positive = poisoned; the PR panel's dotted line is the poison fraction (a random ranking).
    """
    figure, (roc_ax, pr_ax) = _panels(
        10, 4.2, 1, 2, left=0.65, right=0.2, bottom=0.55, top=0.35, wgap=0.8, hgap=0.0
    )
    prevalence = []
    for name, values in scores.items():
        truth, finite = _analysed(is_poison, values)
        if truth.all() or not truth.any():
            continue
        roc = roc_points(truth, finite)
        roc_ax.plot(roc.fpr, roc.tpr, label=f"{name} (AUROC {auroc(truth, finite):.3f})")
        pr = pr_points(truth, finite)
        ap = average_precision(truth, finite)
        pr_ax.step(
            np.r_[0.0, pr.recall],
            np.r_[1.0, pr.precision],
            where="pre",
            label=f"{name} (AP {ap:.3f})",
        )
        prevalence.append(truth.mean())
    roc_ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
    if prevalence:
        pr_ax.axhline(float(np.mean(prevalence)), linestyle=":", color="grey", linewidth=1)
    for ax, title, xlabel, ylabel in (
        (roc_ax, "ROC", "false positive rate", "true positive rate"),
        (pr_ax, "Precision–recall", "recall (TPR)", "precision"),
    ):
        _title(ax, title)
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=8)
    return _png(figure)


def histograms_png(scores: Mapping[str, np.ndarray], is_poison: np.ndarray) -> bytes:
    """Per defense, score histograms of clean and poisoned samples (each normalised to density,
    since poisons are usually few)."""
    rows, cols = _grid(len(scores), 3)
    figure, axes = _panels(
        4.0 * cols,
        3.0 * rows,
        rows,
        cols,
        left=0.6,
        right=0.15,
        bottom=0.5,
        top=0.3,
        wgap=0.75,
        hgap=0.85,
    )
    for ax, (name, values) in zip(axes, scores.items(), strict=False):
        truth, finite = _analysed(is_poison, values)
        bins = np.histogram_bin_edges(finite, bins=40) if len(finite) else 10
        for mask, label, color in ((~truth, "clean", CLEAN), (truth, "poison", POISON)):
            if mask.any():
                _stairs(
                    ax,
                    finite[mask],
                    bins,
                    density=True,
                    alpha=0.6,
                    color=color,
                    label=f"{label} ({int(mask.sum())})",
                )
        _title(ax, name)
        ax.set(xlabel="score (higher = more suspicious)", ylabel="density")
        if ax.get_legend_handles_labels()[0]:  # none when nothing was analysed (all NaN)
            ax.legend(fontsize=8)
    for ax in axes[len(scores) :]:
        ax.set_visible(False)
    return _png(figure)


def class_histograms_png(
    scores: np.ndarray,
    labels: np.ndarray,
    flagged: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str = "",
    max_classes: int = 12,
) -> bytes:
    """One defense's scores per claimed class (no ground truth): kept vs flagged, stacked.

    With more than ``max_classes`` classes, those with the most flagged samples are drawn.
    """
    return ClassHistograms()(
        scores, labels, flagged, class_names, title=title, max_classes=max_classes
    )


class ClassHistograms:
    """:func:`class_histograms_png` for several defenses in turn, drawn on one reused figure.

    A report draws this figure once per defense, all with the same grid of panels (one per
    class). Building the panels (axes, spines, tick objects) was over a third of each draw; here
    the figure of the previous call is kept while the grid is the same, its histograms removed
    and its data limits reset (``Axes.relim``), and everything else set again as on a new figure,
    so each PNG is byte-identical to :func:`class_histograms_png`'s
    (tests/reports/test_plots.py).
    """

    def __init__(self) -> None:
        self._figure: Any = None
        self._axes: np.ndarray = np.empty(0, dtype=object)
        self._grid: tuple[int, int] | None = None

    def _panels(self, rows: int, cols: int) -> tuple[Any, np.ndarray]:
        """The figure of a ``rows`` × ``cols`` grid: the previous one emptied, or a new one."""
        if self._grid == (rows, cols):
            for ax in self._axes:
                for patch in list(ax.patches):
                    patch.remove()
                ax.relim()
            return self._figure, self._axes
        figure, axes = _panels(
            3.2 * cols,
            2.4 * rows + 0.3,
            rows,
            cols,
            left=0.45,
            right=0.15,
            bottom=0.3,
            top=0.55,
            wgap=0.45,
            hgap=0.45,
        )
        _key(figure, [("kept", CLEAN), ("flagged", FLAGGED)])
        self._figure, self._axes, self._grid = figure, axes, (rows, cols)
        return figure, axes

    def __call__(
        self,
        scores: np.ndarray,
        labels: np.ndarray,
        flagged: np.ndarray,
        class_names: Sequence[str],
        *,
        title: str = "",
        max_classes: int = 12,
    ) -> bytes:
        """The PNG of :func:`class_histograms_png` (same arguments)."""
        values = np.asarray(scores, dtype=np.float64)
        labels, flagged = np.asarray(labels), np.asarray(flagged, dtype=bool)
        keep = np.isfinite(values)
        classes = [int(c) for c in np.unique(labels[keep])]
        if len(classes) > max_classes:
            counts = {c: int((flagged & keep & (labels == c)).sum()) for c in classes}
            classes = sorted(sorted(classes, key=lambda c: -counts[c])[:max_classes])
        rows, cols = _grid(max(1, len(classes)), 4)
        figure, axes = self._panels(rows, cols)
        bins = np.histogram_bin_edges(values[keep], bins=30) if keep.any() else 10
        for i, (ax, c) in enumerate(zip(axes, classes, strict=False)):
            mine = keep & (labels == c)
            kept, _ = np.histogram(values[mine & ~flagged], bins=bins)
            both, edges = np.histogram(values[mine], bins=bins)
            ax.stairs(kept, edges, fill=True, color=CLEAN)
            ax.stairs(both, edges, baseline=kept, fill=True, color=FLAGGED)
            name = class_names[c] if c < len(class_names) else str(c)
            n_flagged = int((mine & flagged).sum())
            _title(
                ax,
                f"class {name}: {int(mine.sum()) - n_flagged} kept, {n_flagged} flagged",
                fontsize=8,
            )
            ax.set_xlim(edges[0], edges[-1])
            ax.tick_params(labelsize=7, labelbottom=i + cols >= len(classes))  # bottom panels only
            ax.xaxis.set_major_locator(_locator(5))
            ax.yaxis.set_major_locator(_locator(4, integer=True))
        for i, ax in enumerate(axes):
            ax.set_visible(i < len(classes))
        if title:
            figure.suptitle(
                title, x=0.45 / (3.2 * cols), ha="left", y=1.0 - 0.08 / (2.4 * rows + 0.3), va="top"
            )
        elif figure._suptitle is not None:  # an earlier call's title
            figure._suptitle.set_text("")
        return _png(figure)


def _locator(n: int, *, integer: bool = False) -> Any:
    """At most ``n`` ticks at round values (fewer tick labels: each costs a text layout)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(n, integer=integer)


def _key(figure: Any, entries: Sequence[tuple[str, str]]) -> None:
    """One legend for the whole figure, top right: ``(label, colour)`` filled boxes."""
    from matplotlib.patches import Patch

    figure.legend(
        handles=[Patch(color=colour) for _, colour in entries],
        labels=[label for label, _ in entries],
        loc="upper right",
        ncols=len(entries),
        fontsize=8,
        frameon=False,
    )


def scatter_png(
    features: np.ndarray,
    labels: np.ndarray,
    is_poison: np.ndarray | None = None,
    *,
    means: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    title: str = "",
) -> bytes:
    """2-d features (e.g. the LGM layer) coloured by class, poisons marked with black crosses;
    optional class ``means`` (K, 2) as stars and attack ``targets`` (T, 2) as diamonds."""
    points = np.asarray(features, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected (N, 2) features, got shape {points.shape}")
    labels = np.asarray(labels)
    figure, (ax,) = _panels(
        6.5, 5.5, 1, 1, left=0.65, right=0.2, bottom=0.55, top=0.35, wgap=0.0, hgap=0.0
    )
    poison = np.zeros(len(points), bool) if is_poison is None else np.asarray(is_poison, bool)
    for i, c in enumerate(np.unique(labels)):
        mine = (labels == c) & ~poison
        ax.scatter(
            points[mine, 0], points[mine, 1], s=6, alpha=0.6, color=f"C{i % 10}", label=f"class {c}"
        )
    if poison.any():
        ax.scatter(
            points[poison, 0],
            points[poison, 1],
            s=40,
            marker="x",
            color="black",
            linewidths=1.5,
            label=f"poison ({int(poison.sum())})",
        )
    if means is not None and len(means):
        centres = np.asarray(means, dtype=np.float64).reshape(-1, 2)
        ax.scatter(
            centres[:, 0],
            centres[:, 1],
            s=120,
            marker="*",
            color="gold",
            edgecolors="black",
            label="class means",
        )
    if targets is not None and len(targets):
        aims = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
        ax.scatter(
            aims[:, 0],
            aims[:, 1],
            s=45,
            marker="D",
            facecolors="none",
            edgecolors="magenta",
            label=f"targets ({len(aims)})",
        )
    _title(ax, title or "2-d features")
    ax.set(xlabel="feature 1", ylabel="feature 2")
    ax.legend(fontsize=7, markerscale=2, loc="best", ncols=2)
    return _png(figure)


def _hwc(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) or (H, W) image as something imshow draws, and its colour map."""
    array = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return array, ("gray" if array.ndim == 2 else None)


@dataclass(frozen=True)
class _Tile:
    """One picture of a :func:`_tiles` figure: its cell, the array and its colour scale, and
    the caption above it."""

    row: int
    col: int
    picture: np.ndarray
    cmap: str | None
    vmin: float
    vmax: float
    caption: str
    color: str = "black"


def _tiles(tiles: Sequence[_Tile], rows: int, cols: int, *, margin: float = 0.05) -> bytes:
    """Pictures in a ``rows`` × ``cols`` grid of 1.5 × 1.75-inch cells, captions above them,
    drawn on ONE axes whose data units are inches (y downwards).

    Why one axes: an axes costs its spines, ticks and layout even with the axis off, and an
    image grid has up to 16-32 of them; images placed by ``extent`` in a single axes draw the
    same pictures (square pixels, nearest-neighbour) at a small part of the cost.
    """
    cell_w, cell_h, caption_h = 1.5, 1.75, 0.25
    width, height = cols * cell_w + 2 * margin, rows * cell_h + 2 * margin
    figure, (ax,) = _panels(
        width, height, 1, 1, left=0, right=0, bottom=0, top=0, wgap=0.0, hgap=0.0
    )
    ax.set_axis_off()
    side = min(cell_w - 0.1, cell_h - caption_h - 0.05)
    for tile in tiles:
        h, w = tile.picture.shape[:2]
        scale = side / max(h, w)
        x0 = margin + tile.col * cell_w + (cell_w - w * scale) / 2
        y0 = margin + tile.row * cell_h + caption_h
        ax.imshow(
            tile.picture,
            cmap=tile.cmap,
            vmin=tile.vmin,
            vmax=tile.vmax,
            interpolation="nearest",
            extent=(x0, x0 + w * scale, y0 + h * scale, y0),
        )
        ax.text(
            x0 + w * scale / 2,
            y0 - 0.04,
            tile.caption,
            ha="center",
            va="bottom",
            fontsize=7,
            color=tile.color,
        )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("auto")
    return _png(figure)


def _relevance(heatmap: np.ndarray) -> tuple[np.ndarray, float]:
    """A heatmap summed to (H, W) and the bound of its symmetric colour scale."""
    relevance = np.asarray(heatmap, dtype=np.float64)
    while relevance.ndim > 2:
        relevance = relevance.sum(axis=0)
    return relevance, float(np.abs(relevance).max()) or 1.0


def image_grid_png(
    images: np.ndarray,
    captions: Sequence[str],
    *,
    heatmaps: np.ndarray | None = None,
    highlight: Sequence[bool] | np.ndarray | None = None,
    columns: int = 8,
) -> bytes:
    """Images in a grid with captions, each followed by its heatmap when given; captions of
    ``highlight``-ed samples (e.g. true poisons) are red."""
    n = len(images)
    per = 2 if heatmaps is not None else 1
    rows, cols = _grid(max(n, 1), max(1, columns // per))
    tiles = []
    for i in range(n):
        row, col = divmod(i, cols)
        picture, cmap = _hwc(images[i])
        red = highlight is not None and bool(highlight[i])
        caption = captions[i] if i < len(captions) else ""
        tiles.append(
            _Tile(row, col * per, picture, cmap, 0.0, 1.0, caption, POISON if red else "black")
        )
        if heatmaps is not None:
            relevance, bound = _relevance(heatmaps[i])
            tiles.append(_Tile(row, col * per + 1, relevance, "bwr", -bound, bound, "relevance"))
    return _tiles(tiles, rows, cols * per)


def examples_png(
    rows: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray] | None = None,
    *,
    limit: int = 8,
) -> bytes:
    """Attack examples: one row per kind (base / target / poison, or clean / poison /
    triggered), at most ``limit`` images each, captioned with their labels when given."""
    kinds = [k for k, v in rows.items() if len(v)]
    width = min(limit, max((len(rows[k]) for k in kinds), default=1))
    tiles = []
    for r, kind in enumerate(kinds):
        label = labels.get(kind) if labels else None
        for c, image in enumerate(rows[kind][:width]):
            picture, cmap = _hwc(image)
            text = f"{kind}" if label is None or c >= len(label) else f"{kind}: {int(label[c])}"
            tiles.append(_Tile(r, c, picture, cmap, 0.0, 1.0, text))
    return _tiles(tiles, max(1, len(kinds)), width)
