"""Report figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

Why bytes: the HTML page embeds every figure as base64, so a report is one file that opens
anywhere. matplotlib is imported inside each function (``import poisonlab`` stays light) and
``pyplot`` is never used, so no global backend or figure state is touched: a figure is a
:class:`matplotlib.figure.Figure` printed by ``FigureCanvasAgg`` and dropped.

Conventions: scores are *higher = more suspicious* (every detector's sign); NaN scores mark
samples a defense did not analyse and are left out of every plot. Images are (N, C, H, W) floats
in [0, 1] with C in {1, 3}; heatmaps are (N, H, W) relevance maps, drawn with a diverging map
centred on zero (red = evidence for the class, blue = against).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
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


def _png(figure: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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
    figure = _figure(10, 4.2)
    roc_ax, pr_ax = figure.subplots(1, 2)
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
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=8)
    return _png(figure)


def histograms_png(scores: Mapping[str, np.ndarray], is_poison: np.ndarray) -> bytes:
    """Per defense, score histograms of clean and poisoned samples (each normalised to density,
    since poisons are usually few)."""
    rows, cols = _grid(len(scores), 3)
    figure = _figure(4.0 * cols, 3.0 * rows)
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, values) in zip(axes, scores.items(), strict=False):
        truth, finite = _analysed(is_poison, values)
        bins = np.histogram_bin_edges(finite, bins=40) if len(finite) else 10
        for mask, label, color in ((~truth, "clean", CLEAN), (truth, "poison", POISON)):
            if mask.any():
                ax.hist(
                    finite[mask],
                    bins=bins,
                    density=True,
                    alpha=0.6,
                    color=color,
                    label=f"{label} ({int(mask.sum())})",
                )
        ax.set(title=name, xlabel="score (higher = more suspicious)", ylabel="density")
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
    values = np.asarray(scores, dtype=np.float64)
    labels, flagged = np.asarray(labels), np.asarray(flagged, dtype=bool)
    keep = np.isfinite(values)
    classes = [int(c) for c in np.unique(labels[keep])]
    if len(classes) > max_classes:
        counts = {c: int((flagged & keep & (labels == c)).sum()) for c in classes}
        classes = sorted(sorted(classes, key=lambda c: -counts[c])[:max_classes])
    rows, cols = _grid(max(1, len(classes)), 4)
    figure = _figure(3.2 * cols, 2.4 * rows)
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    bins = np.histogram_bin_edges(values[keep], bins=30) if keep.any() else 10
    for ax, c in zip(axes, classes, strict=False):
        mine = keep & (labels == c)
        parts = [values[mine & ~flagged], values[mine & flagged]]
        ax.hist(
            parts,
            bins=bins,
            stacked=True,
            color=[CLEAN, FLAGGED],
            label=[f"kept ({len(parts[0])})", f"flagged ({len(parts[1])})"],
        )
        name = class_names[c] if c < len(class_names) else str(c)
        ax.set_title(f"class {name}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return _png(figure)


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
    figure = _figure(6.5, 5.5)
    ax = figure.subplots()
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
    ax.set(title=title or "2-d features", xlabel="feature 1", ylabel="feature 2")
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
    figure = _figure(1.5 * cols * per, 1.75 * rows)
    axes = np.atleast_1d(figure.subplots(rows, cols * per, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for i in range(n):
        picture, cmap = _hwc(images[i])
        ax = axes[i * per]
        ax.imshow(picture, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        red = highlight is not None and bool(highlight[i])
        ax.set_title(
            captions[i] if i < len(captions) else "", fontsize=7, color=POISON if red else "black"
        )
        if heatmaps is not None:
            relevance = np.asarray(heatmaps[i], dtype=np.float64)
            while relevance.ndim > 2:
                relevance = relevance.sum(axis=0)
            bound = float(np.abs(relevance).max()) or 1.0
            axes[i * per + 1].imshow(
                relevance, cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest"
            )
            axes[i * per + 1].set_title("relevance", fontsize=7)
    return _png(figure)


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
    figure = _figure(1.5 * width + 1.0, 1.7 * max(1, len(kinds)))
    axes = figure.subplots(max(1, len(kinds)), width, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, kind in enumerate(kinds):
        for c, image in enumerate(rows[kind][:width]):
            picture, cmap = _hwc(image)
            axes[r, c].imshow(picture, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            label = labels.get(kind) if labels else None
            text = f"{kind}" if label is None or c >= len(label) else f"{kind}: {int(label[c])}"
            axes[r, c].set_title(text, fontsize=7)
    return _png(figure)
