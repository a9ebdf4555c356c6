"""The self-contained report page: one HTML file, inline CSS, figures as base64 PNG.

Why self-contained: a report is mailed, attached to an issue or opened from an archive years
later; it must not depend on a server, a CDN or the files beside it. Nothing here writes a URL
other than ``data:`` images and ``#`` anchors (tested).

:func:`write_report` is what ``poisonlab report RUN_DIR`` calls. It recognises three kinds of
folder (:func:`folder_kind`) and builds the sections from whatever artifacts exist; a section
whose data is absent is left out and listed under "Not in this report" with the reason:

- a **scan** output folder (``summary.json`` + ``scores.csv``): :mod:`poisonlab.reports.scan_report`;
- an **experiment** folder ``RUNS/<experiment>`` (cell folders inside, the store one level up):
  :mod:`poisonlab.reports.run_report`;
- a single **cell** folder ``RUNS/<experiment>/<key>`` (``cell.json`` or any artifact).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonlab import __version__
from poisonlab.errors import ConfigError

REPORT_FILE = "report.html"
ARTIFACTS = ("scores.npz", "features.npz", "examples.npz", "heatmaps.npz")

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1150px; padding: 1.5em; color: #1d1d1f; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 2px solid #e3e3e8; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.meta, .note { color: #5f6368; font-size: 0.9em; }
nav ul { columns: 2; font-size: 0.9em; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; border: 1px solid #e3e3e8; }
figcaption { color: #5f6368; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #d9d9de; padding: 0.25em 0.55em; text-align: right; }
th { background: #f3f3f6; }
td.label, th.label { text-align: left; }
td[title] { cursor: help; text-decoration: underline dotted; }
code { background: #f3f3f6; padding: 0 0.2em; font-size: 0.95em; }
pre { background: #f6f6f8; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.missing li { color: #8a5a00; }
.skipped { color: #8a5a00; }
"""


@dataclass
class Section:
    """One titled part of the page (``body`` is trusted HTML built by this package)."""

    title: str
    body: str
    level: int = 2
    anchor: str = ""


@dataclass
class Page:
    """A page under construction: its sections and the list of what is missing and why."""

    title: str
    source: Path
    sections: list[Section] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, title: str, body: str, *, level: int = 2) -> None:
        """Append a section."""
        self.sections.append(Section(title, body, level, f"s{len(self.sections) + 1}"))

    def lack(self, what: str) -> None:
        """Record a section left out, with the reason."""
        self.missing.append(what)


def esc(value: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(value), quote=True)


class Tip(str):
    """A table cell's text with a tooltip saying what it means (e.g. "n/a" and why a metric is
    undefined); compares and prints as its text."""

    tip: str

    def __new__(cls, text: str, tip: str) -> Tip:
        """The cell ``text`` with the tooltip ``tip``."""
        cell = super().__new__(cls, text)
        cell.tip = tip
        return cell


_BACKTICKED = re.compile(r"`([^`]+)`")


def cell_html(value: Any) -> str:
    """A table cell's content: escaped text, a library message's backticked name (the reason
    "needs a clean held-out set (`holdout`)") set as code instead of showing the backticks."""
    return _BACKTICKED.sub(r"<code>\1</code>", esc(value))


def figure(png: bytes, caption: str) -> str:
    """An embedded PNG with a caption."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, labels: int = 1) -> str:
    """An HTML table; the first ``labels`` columns are left-aligned label columns; an all-empty
    ``header`` gives a key–value table without a header row. A :class:`Tip` cell gets its
    tooltip; backticked names in a cell are set as code (:func:`cell_html`)."""
    head = "".join(
        f'<th class="label">{esc(h)}</th>' if i < labels else f"<th>{esc(h)}</th>"
        for i, h in enumerate(header)
    )
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            attributes = ' class="label"' if i < labels else ""
            if isinstance(c, Tip):
                attributes += f' title="{esc(c.tip)}"'
            cells.append(f"<td{attributes}>{cell_html(c)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def pre_json(value: Any) -> str:
    """A value as pretty JSON in a <pre> block."""
    return f"<pre>{esc(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"


def note(text: str) -> str:
    """A grey explanatory paragraph."""
    return f'<p class="note">{esc(text)}</p>'


def versions_table(recorded: dict[str, Any] | None) -> str:
    """Package versions the results were produced with, beside the ones rendering the report."""
    from poisonlab.versions import package_versions

    now = package_versions()
    recorded = recorded or {}
    names = list(dict.fromkeys([*recorded, *now]))
    rows = [(n, recorded.get(n) or "-", now.get(n) or "-") for n in names]
    return table(["package", "results produced with", "report rendered with"], rows)


def render(page: Page) -> str:
    """The complete HTML document."""
    toc = "".join(
        f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in page.sections if s.level == 2
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(page.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(page.title)}</h1>",
        f'<p class="meta">{esc(page.source)} — rendered {esc(time.strftime("%Y-%m-%d %H:%M"))} '
        f"by poisonlab {esc(__version__)}</p>",
        f"<nav><ul>{toc}</ul></nav>" if toc else "",
    ]
    for s in page.sections:
        tag = f"h{min(max(s.level, 2), 4)}"
        parts.append(f'<section id="{s.anchor}"><{tag}>{esc(s.title)}</{tag}>{s.body}</section>')
    if page.missing:
        items = "".join(f"<li>{esc(m)}</li>" for m in page.missing)
        parts.append(
            f'<section class="missing"><h2>Not in this report</h2><ul>{items}</ul></section>'
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def folder_kind(folder: Path) -> str:
    """``scan``, ``cell`` or ``experiment`` (see the module docstring); ConfigError otherwise."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    if (folder / "summary.json").is_file() and (folder / "scores.csv").is_file():
        return "scan"
    if (folder / "cell.json").is_file() or any((folder / a).is_file() for a in ARTIFACTS):
        return "cell"
    if (folder / "config.json").is_file() or any(
        (sub / "cell.json").is_file() for sub in folder.iterdir() if sub.is_dir()
    ):
        return "experiment"
    if (folder / "results.sqlite").is_file():
        names = sorted(d.name for d in folder.iterdir() if (d / "config.json").is_file())
        raise ConfigError(
            f"{folder} is a runs folder; give one experiment folder in it "
            f"({', '.join(str(folder / n) for n in names) or 'none yet'})"
        )
    if (folder / "attack.json").is_file() and (folder / "poisoned.npz").is_file():
        raise ConfigError(
            f"{folder} is an attack's output, which has no report of its own: scan its "
            f"poisoned.npz (poisonlab scan {shlex.quote(str(folder / 'poisoned.npz'))} -D all -o "
            "SCAN; the scan's report.html measures every defense against the planted poisons)"
        )
    raise ConfigError(
        f"{folder} is not a scan output (summary.json + scores.csv), an experiment folder "
        "(RUNS/<experiment>) or a cell folder (cell.json, scores.npz...)"
    )


def write_page(page: Page, folder: Path) -> Path:
    """Write ``folder/report.html`` atomically and return its path."""
    path = folder / REPORT_FILE
    partial = folder / (REPORT_FILE + ".partial")
    partial.write_text(render(page), encoding="utf-8")
    partial.replace(path)
    return path


def write_report(folder: str | Path, *, data: str | None = None, max_cells: int = 8) -> Path:
    """Write ``folder/report.html`` for a scan, experiment or cell folder and return its path.

    ``data`` (scan folders only) names the scanned data again, for the image sections and, when it
    is an .npz with an ``is_poison`` array (``poisonlab attack`` output), the ground truth;
    without it a scan folder's data is read from where summary.json says the scan read it.
    ``max_cells`` bounds how many cells of an experiment get their own figures.
    """
    folder = Path(folder)
    kind = folder_kind(folder)
    if data is not None and kind != "scan":
        raise ConfigError("`data` applies to scan output folders only")
    if kind == "scan":
        from poisonlab.reports.scan_report import (
            load_scanned,
            read_summary,
            recorded_data,
            scan_page,
        )

        dataset, recorded = recorded_data(folder) if data is None else (None, None)
        if data is not None:
            dataset = load_scanned(data, read_summary(folder))  # at the size scanned
        data = data or recorded
        page = scan_page(folder, dataset=dataset, source=data)
    else:
        from poisonlab.reports.run_report import cell_page, experiment_page

        page = experiment_page(folder, max_cells) if kind == "experiment" else cell_page(folder)
    return write_page(page, folder)
