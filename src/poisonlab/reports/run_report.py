"""Report pages of experiment runs: one experiment folder, or one cell folder.

A cell leaves optional artifacts (:mod:`poisonlab.experiments.tasks_base`); each becomes sections:

- ``scores.npz`` → ROC and PR curves per defense, clean-vs-poison score histograms and a detection
  table recomputed from the same arrays (``is_poison``, ``score__<d>``, ``flagged__<d>``,
  ``analysed__<d>``); with ``val_is_triggered`` / ``val_score__<m>`` (Subedar et al. 2019's held-out
  protocol) a second pair of curves;
- ``features.npz`` → the 2-d feature scatter (``features``, ``labels``, ``is_poison``, optional
  class ``means`` and ``target_features``);
- ``heatmaps.npz`` → per defense the most suspicious images beside their relevance maps
  (``images__<d>``, ``heatmaps__<d>``, ``scores__<d>``, ``is_poison__<d>``, ``labels__<d>``);
- ``examples.npz`` → attack examples: every image array (N, C, H, W) is a row, captioned with
  ``<name>_labels`` when present (base / target / poison, or clean / poison / triggered).

The experiment page adds the store's metrics (the paper table the config reproduces and every
metric by grid setting), the resolved config and the package versions from ``config.json``.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poisonlab.errors import PoisonlabError
from poisonlab.metrics.detection import detection_metrics
from poisonlab.ranges import counted
from poisonlab.reports import plots
from poisonlab.reports.compare import paper_style_table
from poisonlab.reports.html import Page, Tip, figure, note, pre_json, table, versions_table
from poisonlab.reports.records import (
    CellRecord,
    available_metrics,
    load_records,
    store_path,
    varying_paths,
)
from poisonlab.reports.tables import Table, generic_table, transposed


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of an .npz (no pickles), or None when the file is absent or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


UNDEFINED = "n/a"
"""A metric undefined for the samples at hand (precision when nothing is flagged, TPR without
poisons): the table shows this, with the reason as the cell's tooltip and under the table."""


def _fmt(value: float | int, why: str | None = None) -> str:
    """A metric for a table cell; NaN is :data:`UNDEFINED` explained by ``why`` when the
    reason is known (the detection table), else "nan"."""
    if isinstance(value, float) and np.isnan(value):
        return Tip(UNDEFINED, why) if why else "nan"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def detection_rows(
    is_poison: np.ndarray, scores: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]
) -> list[list[str]]:
    """Per defense: analysed, poisons, flagged, ACC, TPR, TNR, precision, AUROC, AUPR; an
    undefined metric is a :class:`~poisonlab.reports.html.Tip` "n/a" carrying the reason."""
    rows = []
    for name, values in scores.items():
        analysed = arrays.get(f"analysed__{name}", np.isfinite(values)).astype(bool)
        analysed &= np.isfinite(values)
        flagged = arrays.get(f"flagged__{name}", np.zeros(len(values), bool)).astype(bool)
        m = detection_metrics(is_poison[analysed], values[analysed], flagged[analysed])
        stats = (m.accuracy, m.tpr, m.tnr, m.precision, m.auroc, m.aupr)
        why = "; ".join(m.notes) or "undefined"
        cells = [_fmt(v, why) for v in stats]
        rows.append([name, str(m.n), str(m.n_poison), str(m.n_flagged), *cells])
    return rows


def undefined_note(rows: list[list[str]]) -> str:
    """Why a detection table shows "n/a", per defense ("" when every metric is defined)."""
    reasons = {row[0]: cell.tip for row in rows for cell in row[1:] if isinstance(cell, Tip)}
    if not reasons:
        return ""
    told = "; ".join(f"{name}: {why}" for name, why in reasons.items())
    return note(f"{UNDEFINED}: undefined for the samples at hand ({told}).")


DETECTION_HEADER = [
    "defense",
    "analysed",
    "poisons",
    "flagged",
    "ACC",
    "TPR",
    "TNR",
    "precision",
    "AUROC",
    "AUPR",
]


def detection_table(
    is_poison: np.ndarray, scores: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray]
) -> str:
    """The detection table (:func:`detection_rows`) with the note on its "n/a" cells."""
    rows = detection_rows(is_poison, scores, arrays)
    return table(DETECTION_HEADER, rows) + undefined_note(rows)


def score_sections(page: Page, arrays: Mapping[str, np.ndarray], where: str, level: int) -> None:
    """ROC/PR, histograms and the detection table from scores.npz arrays."""
    truth = np.asarray(arrays.get("is_poison", []), dtype=bool)
    scores = {
        k[len("score__") :]: v.astype(np.float64)
        for k, v in arrays.items()
        if k.startswith("score__") and len(v) == len(truth)
    }
    if not scores:
        page.lack(
            f"{where}ROC/PR curves and histograms: scores.npz holds no score__<defense> arrays"
        )
        return
    if truth.any() and not truth.all():
        page.add(
            f"{where}ROC and precision–recall per defense",
            figure(plots.curves_png(scores, truth), "ROC and PR curves (positive = poison)"),
            level=level,
        )
    else:
        page.lack(f"{where}ROC/PR curves: the scored set has no poisons or no clean samples")
    page.add(
        f"{where}Score histograms, clean vs poison",
        figure(plots.histograms_png(scores, truth), "scores of clean and poisoned samples"),
        level=level,
    )
    page.add(
        f"{where}Detection from the scores",
        detection_table(truth, scores, arrays)
        + note(
            "Recomputed from scores.npz over each defense's analysed samples; positive = poison."
        ),
        level=level,
    )
    val_truth = arrays.get("val_is_triggered")
    if val_truth is not None:
        val = {
            k[len("val_score__") :]: v.astype(np.float64)
            for k, v in arrays.items()
            if k.startswith("val_score__")
        }
        page.add(
            f"{where}Held-out protocol (clean test vs triggered test)",
            figure(
                plots.curves_png(val, val_truth.astype(bool)),
                "Subedar et al. 2019 D_val^BD: positive = triggered test image",
            ),
            level=level,
        )


def artifact_sections(page: Page, folder: Path, *, where: str = "", level: int = 2) -> None:
    """Every section a cell folder's artifacts support (module docstring); the rest is listed
    as missing with the reason."""
    scores = read_npz(folder / "scores.npz")
    if scores is None:
        page.lack(f"{where}ROC/PR curves and score histograms: no scores.npz")
    else:
        score_sections(page, scores, where, level)
    features = read_npz(folder / "features.npz")
    if features is not None and features.get("features", np.empty((0, 0))).shape[-1:] == (2,):
        png = plots.scatter_png(
            features["features"],
            features.get("labels", np.zeros(len(features["features"]))),
            features.get("is_poison"),
            means=features.get("means"),
            targets=features.get("target_features"),
            title="LGM features",
        )
        page.add(
            f"{where}2-d feature space",
            figure(png, "features by class; crosses = poisons"),
            level=level,
        )
    else:
        page.lack(f"{where}2-d feature scatter: no features.npz with 2-d features (LGM cells only)")
    heatmaps = read_npz(folder / "heatmaps.npz")
    names = [k[len("heatmaps__") :] for k in heatmaps or {} if k.startswith("heatmaps__")]
    for name in names:
        assert heatmaps is not None
        images, maps = heatmaps[f"images__{name}"], heatmaps[f"heatmaps__{name}"]
        labels = heatmaps.get(f"labels__{name}", np.full(len(images), -1))
        values = heatmaps.get(f"scores__{name}", np.full(len(images), np.nan))
        captions = [f"y={int(y)} s={s:.3g}" for y, s in zip(labels, values, strict=False)]
        png = plots.image_grid_png(
            images, captions, heatmaps=maps, highlight=heatmaps.get(f"is_poison__{name}")
        )
        page.add(
            f"{where}Most suspicious samples: {name}",
            figure(png, "highest scores first, each beside its relevance map; red = true poison"),
            level=level,
        )
    if not names:
        page.lack(
            f"{where}suspicious images with heatmaps: no heatmaps.npz (no defense exposed relevance maps)"
        )
    example_arrays = read_npz(folder / "examples.npz") or {}
    rows = {k: v for k, v in example_arrays.items() if v.ndim == 4 and v.shape[1] in (1, 3)}
    if rows:
        row_labels = {
            k: example_arrays[f"{k}_labels"] for k in rows if f"{k}_labels" in example_arrays
        }
        page.add(
            f"{where}Attack examples",
            figure(
                plots.examples_png(rows, row_labels),
                "rows: " + ", ".join(rows) + " (with their labels)",
            ),
            level=level,
        )
        extra = {
            k: v for k, v in example_arrays.items() if v.ndim == 1 and not k.endswith("_labels")
        }
        if extra:
            header = ["example", *extra]
            body = [
                [str(i), *(_fmt(float(v[i])) for v in extra.values())]
                for i in range(min(len(v) for v in extra.values()))
            ]
            page.add(f"{where}Per-example values", table(header, body), level=level + 1)
    else:
        page.lack(f"{where}attack examples: no examples.npz with images")


def _metrics_tables(page: Page, records: list[CellRecord], paper: str | None) -> None:
    """The paper table (if any) and every metric by grid setting (metrics as rows)."""
    shown: list[Table] = [paper_style_table(records, paper)] if paper else []
    generic = generic_table(records, rows=varying_paths(records), values=available_metrics(records))
    shown.append(transposed(generic))
    for t in shown:
        title = t.title if t is not shown[-1] else "Metrics by grid setting"
        body = table(t.header, t.rows, labels=t.label_columns)
        page.add(title, body + "".join(note(n) for n in t.notes))


def experiment_page(folder: Path, max_cells: int = 8) -> Page:
    """The page of ``RUNS/<experiment>``: overview, metrics, per-cell figures, config, versions."""
    runs, name = folder.parent, folder.name
    page = Page(f"poisonlab report: experiment {name}", folder)
    saved = _json(folder / "config.json")
    config = saved.get("config", {}) if saved else {}
    records: list[CellRecord] = []
    try:
        records = load_records(runs, name)
        if not records:
            page.lack("metrics tables: no finished cells in the store yet")
    except PoisonlabError as exc:
        page.lack(f"metrics tables: {exc}")
    paper = config.get("paper", {}).get("table") or next(
        (r.paper_table for r in records if r.paper_table), None
    )
    overview = [
        ("experiment", name),
        ("kind", config.get("kind", "-")),
        ("description", config.get("description", "") or "-"),
        ("paper table", paper or "-"),
        ("finished cells", str(len(records))),
        ("store", str(store_path(runs))),
    ]
    page.add("Overview", table(["", ""], overview, labels=2))
    if records:
        _metrics_tables(page, records, paper)
    by_key = {r.key: r for r in records}
    cells = sorted(
        (d for d in folder.iterdir() if d.is_dir() and (d / "cell.json").is_file()),
        key=lambda d: _cell_order(
            by_key.get(d.name), list(by_key).index(d.name) if d.name in by_key else len(by_key), d
        ),
    )
    for cell in cells[:max_cells]:
        record = by_key.get(cell.name)
        label = record.description if record and record.description else cell.name[:12]
        page.add(f"Cell {label}", note(f"folder {cell.name}"))
        artifact_sections(page, cell, where=f"{label}: ", level=3)
    if len(cells) > max_cells:
        page.lack(
            f"figures of {counted(len(cells) - max_cells, 'more cell')} "
            "(raise --max-cells to include them)"
        )
    if not cells:
        page.lack("per-cell figures: no cell folders (cell.json) in this experiment folder")
    if saved:
        page.add("Configuration", pre_json(config))
        page.add("Package versions", versions_table(saved.get("versions")))
    else:
        page.lack("configuration and versions: no config.json in the experiment folder")
    return page


def _cell_order(record: CellRecord | None, position: int, folder: Path) -> tuple[int, int, str]:
    """First repeats first (one figure set per grid setting before its repeats), then grid order
    (the store's), then folder name for cells the store does not know."""
    repeat = int(record.params.get("repeat", 0) or 0) if record else 0
    return (repeat, position, folder.name)


def _json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when absent or malformed."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def cell_page(folder: Path) -> Page:
    """The page of one cell folder: its metrics (from the store), figures, parameters, versions."""
    spec = _json(folder / "cell.json") or {}
    experiment, key = (
        str(spec.get("experiment", folder.parent.name)),
        str(spec.get("key", folder.name)),
    )
    page = Page(f"poisonlab report: cell {key[:12]} of {experiment}", folder)
    record = None
    try:
        record = next(
            (r for r in load_records(folder.parent.parent, experiment) if r.key == key), None
        )
    except PoisonlabError as exc:
        page.lack(f"stored metrics: {exc}")
    if record is not None:
        rows = [(name, _fmt(value)) for name, value in sorted(record.metrics.items())]
        page.add("Metrics", table(["metric", "value"], rows) + note(record.description))
    elif not page.missing:
        page.lack("stored metrics: the store has no finished record of this cell")
    artifact_sections(page, folder)
    if spec.get("params"):
        page.add("Parameters", pre_json(spec["params"]))
    else:
        page.lack("parameters: no cell.json")
    page.add("Package versions", versions_table(dict(record.versions) if record else None))
    return page
