"""The report page of a ``poisonlab scan`` output folder (``scores.csv`` + ``summary.json``).

A scan of the user's own data has no labels of poison, so the page shows what can be shown
honestly: per defense the score histograms per claimed class (kept vs flagged) and the most
suspicious images. ROC / PR curves and clean-vs-poison histograms appear only with ground truth:
when the scanned data is an .npz carrying an ``is_poison`` array (what ``poisonlab attack``
writes), checked against ``scores.csv`` sample by sample (same length, same ids).

Images are not stored in the scan folder; they come from the data set given to
:func:`write_scan_report` (``poisonlab scan`` passes the set it scanned; ``poisonlab report
DIR`` loads it again from where summary.json's ``dataset.source`` says it was read, or from
``--data SPEC``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from poisonlab import progress
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses.thresholds import overrides_verdicts
from poisonlab.errors import DataError, PoisonlabError
from poisonlab.ranges import class_label, class_ranges
from poisonlab.reports import plots
from poisonlab.reports.html import (
    Page,
    Tip,
    figure,
    note,
    pre_json,
    table,
    versions_table,
    write_page,
)
from poisonlab.reports.run_report import detection_table

logger = logging.getLogger(__name__)

TOP_IMAGES = 16

REPORTED_ONLY = "reported only"
"""A defense's part when its flags are not in the combined decision (summary.json's role)."""


def read_scores(
    path: Path,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``scores.csv`` as (ids, labels, scores per defense (NaN = not analysed), flags per defense)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        rows = list(reader)
    if not header or header[:3] != ["index", "id", "label"]:
        raise DataError(f"{path}: not a poisonlab scores.csv (expected index,id,label,...)")
    names = [h[: -len("_score")] for h in header if h.endswith("_score")]
    column = {h: i for i, h in enumerate(header)}
    ids = np.array([r[1] for r in rows], dtype=str)
    labels = np.array([int(r[2]) for r in rows], dtype=np.int64)
    scores, flags = {}, {}
    for name in names:
        s, f = column[f"{name}_score"], column.get(f"{name}_flagged")
        if name == "combined":  # the combined decision's flags are the removed column
            f = column.get("removed")
        scores[name] = np.array([float(r[s]) if r[s] else math.nan for r in rows], dtype=np.float64)
        flags[name] = np.array(
            [r[f] == "1" for r in rows] if f is not None else [False] * len(rows)
        )
    return ids, labels, scores, flags


def ground_truth(source: str | None, ids: np.ndarray) -> np.ndarray | None:
    """``is_poison`` of the scanned data when ``source`` is an .npz that has it, else None.

    Raises DataError when the file's samples are not the ones in ``scores.csv``.
    """
    if source is None:
        return None
    from poisonlab.data.loaders import resolve
    from poisonlab.data.npz import is_npz_file

    try:
        _, path = resolve(source)
    except DataError:
        return None
    if path is None or not path.is_file() or not is_npz_file(path):
        return None
    with np.load(path, allow_pickle=False) as archive:
        if "is_poison" not in archive.files:
            return None
        truth = np.asarray(archive["is_poison"], dtype=bool)
        stored = archive["ids"].astype(str) if "ids" in archive.files else None
    if truth.shape != ids.shape or (stored is not None and not np.array_equal(stored, ids)):
        raise DataError(f"{path}: its samples are not the ones scanned (scores.csv ids differ)")
    return truth


def _overview(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Key facts of summary.json as label/value rows."""
    data = summary.get("dataset", {})
    clean = summary.get("clean", {})
    holdout = summary.get("holdout") or {}
    return [
        (
            "data",
            f"{data.get('name', '-')}: {data.get('size', '-')} images, "
            f"{data.get('num_classes', '-')} classes, shape {data.get('image_shape', '-')}",
        ),
        ("held-out set", f"{holdout.get('name')} ({holdout.get('size')})" if holdout else "none"),
        ("threshold", str(summary.get("threshold", "-"))),
        (
            "clean set",
            f"kept {clean.get('kept', '-')}, removed {clean.get('removed', '-')} "
            f"({clean.get('rule', '')})",
        ),
        ("run time", f"{summary.get('seconds', '-')} s"),
    ]


def _verdict_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per class tested: the class (with its name when that is not its number: an image
    folder's class folder), the verdict (and the members whose held-out check found a genuine
    mode there), combined p-value, its level, who named it and how many samples were removed."""
    rows = []
    per_class = (summary.get("decision") or {}).get("per_class") or {}
    names = (summary.get("dataset") or {}).get("class_names") or []
    named_first = sorted(per_class.items(), key=lambda kv: (not kv[1].get("poisoned"), int(kv[0])))
    for c, info in named_first:
        p = info.get("p_value")
        verdict = "poisoned" if info.get("poisoned") else "clean"
        if info.get("modes_found_by"):
            verdict += (
                " (a genuine mode: held-out check of " + ", ".join(info["modes_found_by"]) + ")"
            )
        rows.append(
            [
                class_label(int(c), names),
                verdict,
                "-" if p is None else f"{p:.2g}",
                "-" if info.get("level") is None else f"{info['level']:.2g}",
                ", ".join(info.get("named_by") or []) or "-",
                str(info.get("removed", 0)),
            ]
        )
    return rows


def threshold_text(threshold: Any) -> str:
    """A defense's threshold record (summary.json) in the words ``--threshold`` takes, e.g.
    ``fpr:0.05`` for the record ``{"rule": "target-fpr", "fpr": 0.05, ...}``."""
    if not isinstance(threshold, dict):
        return ""
    rule = str(threshold.get("rule", ""))
    number = {"contamination": "fraction", "target-fpr": "fpr", "value": "cutoff"}.get(rule)
    if number is not None and isinstance(threshold.get(number), int | float):
        return f"{'fpr' if rule == 'target-fpr' else rule}:{threshold[number]:g}"
    alpha = threshold.get("alpha")
    if rule == "verdict" and isinstance(alpha, float) and alpha != 0.05:
        return f"verdict:{alpha:g}"
    return rule


def named_text(threshold: Any, verdicts: list[tuple[int, bool]]) -> str:
    """The classes a defense's verdicts named, as the defenses tables show them
    (:func:`~poisonlab.ranges.class_ranges`, or ``none``); ``-`` for a defense without class
    verdicts and under a user's cut
    (:func:`~poisonlab.defenses.thresholds.overrides_verdicts`), where no class verdict decides its flags,
    as the combined decision says ("no class verdict")."""
    if not verdicts or overrides_verdicts(threshold):
        return "-"
    return class_ranges([label for label, poisoned in verdicts if poisoned])


def _defense_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per defense what the terminal table shows: its part in the combined decision (a member,
    or reported only with the reason as a tooltip), the classes its verdicts named, flagged /
    analysed, threshold rule, and seconds or the reason it was skipped."""
    rows: list[list[str]] = []
    for name, info in summary.get("defenses", {}).items():
        if info.get("status") != "ran":
            rows.append([name, "skipped", "-", "-", "-", str(info.get("reason", ""))])
            continue
        role = str(info.get("role") or "")
        part: str = "ran"  # a summary.json written before roles were recorded
        if role.startswith(REPORTED_ONLY):
            part = Tip(REPORTED_ONLY, role.removeprefix(REPORTED_ONLY).lstrip(": ") or role)
        elif role:
            part = "in the decision"
        verdicts = [(v["label"], bool(v.get("poisoned"))) for v in info.get("verdicts") or []]
        named = named_text(info.get("threshold"), verdicts)
        rows.append(
            [
                name,
                part,
                named,
                f"{info.get('flagged')} / {info.get('analysed')}",
                threshold_text(info.get("threshold")),
                f"{info.get('seconds')} s",
            ]
        )
    return rows


def _suspicious(
    page: Page,
    dataset: ImageDataset,
    scores: dict[str, np.ndarray],
    truth: np.ndarray | None,
    bar: progress.Bar,
) -> None:
    """Per defense the TOP_IMAGES highest-scoring images, captioned with index, label, score."""
    images = dataset.images.numpy()
    names = dataset.class_names
    for name, values in scores.items():
        finite = np.where(np.isfinite(values), values, -np.inf)
        order = np.argsort(-finite, kind="stable")[
            : min(TOP_IMAGES, int(np.isfinite(values).sum()))
        ]
        if not len(order):
            continue
        captions = [f"#{i} {names[int(dataset.labels[i])]} s={values[i]:.3g}" for i in order]
        png = plots.image_grid_png(
            images[order], captions, highlight=None if truth is None else truth[order]
        )
        caption = "highest scores first" + ("; red = true poison" if truth is not None else "")
        page.add(f"Most suspicious images: {name}", figure(png, caption), level=3)
        bar.advance(1, f"images: {name}")


def read_summary(folder: Path) -> dict[str, Any]:
    """The scan folder's summary.json."""
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def load_scanned(spec: str, summary: dict[str, Any]) -> ImageDataset:
    """``spec`` loaded as the scan of ``summary`` (its summary.json) read it: an image folder or
    GTSRB resized to the scanned image size (``dataset.image_shape``, which ``--image-size`` may
    have chosen); other formats as they are."""
    from poisonlab.data.loaders import load_dataset, resolve

    shape = (summary.get("dataset") or {}).get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3) or "size" not in resolve(spec)[0].options:
        return load_dataset(spec)
    return load_dataset(spec, size=(int(shape[1]), int(shape[2])))


def recorded_data(folder: Path) -> tuple[ImageDataset | None, str | None]:
    """The scanned data read again from summary.json's ``dataset.source`` (where ``poisonlab
    scan`` read it), and that spec; ``(None, None)`` when none is recorded, or with a warning
    when it cannot be read or is no longer the data scanned (scores.csv's ids)."""
    summary = read_summary(folder)
    source = (summary.get("dataset") or {}).get("source")
    if not isinstance(source, str):
        return None, None
    advice = "the page has no images; pass the scanned data with --data"
    try:
        dataset = load_scanned(source, summary)
    except (PoisonlabError, OSError) as exc:
        logger.warning("cannot read the scanned data %s again (%s): %s", source, exc, advice)
        return None, None
    ids = read_scores(folder / "scores.csv")[0]
    if len(dataset) != len(ids) or not np.array_equal(dataset.ids, ids):
        logger.warning(
            "%s is no longer the scanned data (its samples differ from %s): %s",
            source,
            folder / "scores.csv",
            advice,
        )
        return None, None
    return dataset, source


def scan_page(
    folder: Path, *, dataset: ImageDataset | None = None, source: str | None = None
) -> Page:
    """The page of a scan folder (module docstring); a progress stage counts its figures."""
    with progress.bar("report figures", None) as bar:
        return _scan_page(folder, dataset, source, bar)


def _scan_page(
    folder: Path, dataset: ImageDataset | None, source: str | None, bar: progress.Bar
) -> Page:
    summary = read_summary(folder)
    ids, labels, scores, flags = read_scores(folder / "scores.csv")
    if dataset is not None and (len(dataset) != len(ids) or not np.array_equal(dataset.ids, ids)):
        raise DataError(
            f"the data given ({dataset.name}, {len(dataset)} samples) is not the scanned data "
            f"({len(ids)} samples in {folder / 'scores.csv'}; ids differ)"
        )
    truth = ground_truth(source, ids)
    page = Page(
        f"poisonlab report: scan of {summary.get('dataset', {}).get('name', folder.name)}", folder
    )
    page.add("Overview", table(["", ""], _overview(summary), labels=2))
    if summary.get("verdict"):
        page.add("Verdict", note(str(summary["verdict"])))
        rows = _verdict_rows(summary)
        if rows:
            page.add(
                "Per-class verdicts",
                table(
                    ["class", "verdict", "p-value", "level", "named by", "removed"], rows, labels=2
                ),
                level=3,
            )
        named = (summary.get("decision") or {}).get("poisoned_classes") or []
        if named and "combined" in scores:
            shown = np.where(np.isin(labels, named), scores["combined"], np.nan)
            names = summary.get("dataset", {}).get("class_names") or [
                str(c) for c in range(int(labels.max()) + 1)
            ]
            png = plots.class_histograms_png(
                shown, labels, flags["combined"], names, title="combined"
            )
            page.add(
                "Combined score of the classes named poisoned",
                figure(png, "kept vs removed samples of each class named poisoned"),
                level=3,
            )
            bar.advance(1, "combined")
    defense_rows = _defense_rows(summary)
    reported_only = any(row[1] == REPORTED_ONLY for row in defense_rows)
    page.add(
        "Defenses",
        table(
            [
                "defense",
                "decision",
                "classes named",
                "flagged / analysed",
                "threshold",
                "seconds or reason",
            ],
            defense_rows,
            labels=2,
        )
        + (
            note(
                "reported only: its flags are not part of the combined decision (the reason is "
                "in the cell's tooltip and in summary.json, defenses.NAME.role)"
            )
            if reported_only
            else ""
        ),
    )
    if not scores:
        page.lack("figures: no defense ran (scores.csv has no score columns)")
    elif truth is not None:
        page.add(
            "ROC and precision–recall per defense",
            figure(
                plots.curves_png(scores, truth), "ground truth from is_poison; positive = poison"
            ),
        )
        page.add(
            "Score histograms, clean vs poison",
            figure(plots.histograms_png(scores, truth), "scores of clean and poisoned samples"),
        )
        bar.advance(2, "curves and histograms")
        arrays = {f"flagged__{n}": f for n, f in flags.items()}
        page.add(
            "Detection against the ground truth",
            detection_table(truth, scores, arrays),
        )
    else:
        page.lack(
            "ROC/PR curves and clean-vs-poison histograms: "
            + (
                "the scanned data carries no ground truth (an .npz with is_poison, as "
                "`poisonlab attack` writes)"
                if source is not None
                else "the scanned data was not found (run `poisonlab report DIR --data DATA`)"
            )
        )
    if scores:
        class_names = summary.get("dataset", {}).get("class_names") or [
            str(c) for c in range(int(labels.max()) + 1)
        ]
        page.add(
            "Score histograms per class",
            note(
                "No poison labels are needed: per claimed class, kept and flagged samples' scores."
            ),
        )
        per_class = plots.ClassHistograms()  # one figure for all defenses
        for name, values in scores.items():
            png = per_class(values, labels, flags[name], class_names, title=name)
            page.add(
                f"Scores per class: {name}",
                figure(png, f"{name}: kept vs flagged per class"),
                level=3,
            )
            bar.advance(1, f"per class: {name}")
    if dataset is not None and scores:
        page.add("Most suspicious images", note("Per defense, the highest-scoring samples."))
        _suspicious(page, dataset, scores, truth, bar)
    elif scores:
        page.lack(
            "most suspicious images: the images are not in the scan folder; run "
            "`poisonlab report DIR --data DATA` with the scanned data"
        )
    settings = {k: summary.get(k) for k in ("threshold", "settings", "models", "holdout")}
    settings["defenses"] = {
        n: i.get("parameters")
        for n, i in summary.get("defenses", {}).items()
        if i.get("status") == "ran"
    }
    page.add("Configuration", pre_json(settings))
    page.add(
        "Package versions",
        versions_table(
            summary.get("versions")  # before it was recorded: these two only
            or {k: summary.get(k) for k in ("poisonlab", "torch")}
        ),
    )
    return page


def write_scan_report(
    folder: str | Path, *, dataset: ImageDataset | None = None, source: str | None = None
) -> Path:
    """Write ``folder/report.html`` for a scan folder; ``dataset`` is the scanned data (for the
    images) and ``source`` its spec (for ground truth from an .npz with ``is_poison``)."""
    folder = Path(folder)
    return write_page(scan_page(folder, dataset=dataset, source=source), folder)
