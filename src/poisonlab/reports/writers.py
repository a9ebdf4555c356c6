"""Table output: Markdown (for RESULTS.md and reviews), long-format CSV (for analysis), rich.

Kept apart from :mod:`poisonlab.reports.tables` so building a table never touches files or the
terminal. The CSV is long-format (one line per row × column, raw numbers, the unit named), so a
spreadsheet or pandas reads it without parsing ``mean ± std`` strings.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from poisonlab.reports.tables import CSV_HEADER, Table, transposed

WIDE = 6
"""More value columns than this are shown transposed in the terminal (metrics as rows)."""

if TYPE_CHECKING:
    from rich.table import Table as RichTable


def _md_cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    """The table as a Markdown section: a heading, the pipe table, and its notes as a list."""
    lines = [f"### {_md_cell(table.title)}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The table's long-format rows (header :data:`~poisonlab.reports.tables.CSV_HEADER`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(table.csv_rows)
    return buffer.getvalue()


def to_rich(table: Table) -> RichTable:
    """A rich Table with the notes as its caption.

    For the terminal each ``X ours`` / ``X paper`` pair becomes one column ``X`` whose cells hold
    ours (bold) over the paper's value (dim), which halves the width of paper-style tables, and
    a generic table with more than :data:`WIDE` metric columns is shown transposed.
    """
    from rich.markup import escape
    from rich.table import Table as RichTable

    if len(table.header) - table.label_columns - 1 > WIDE and " ours" not in "".join(table.header):
        table = transposed(table)  # many metrics: one row each
    caption = escape("\n".join(table.notes))
    rich = RichTable(title=escape(table.title), caption=caption, caption_justify="left")
    header = table.header
    pairs = [
        i
        for i in range(len(header) - 1)
        if header[i].endswith(" ours") and header[i + 1] == header[i][:-5] + " paper"
    ]
    merged = set(pairs) | {i + 1 for i in pairs}
    for i, name in enumerate(header):
        if i in pairs:
            rich.add_column(f"{escape(name[:-5])}\n[bold]ours[/] / [dim]paper[/]", justify="right")
        elif i not in merged:
            rich.add_column(escape(name), justify="left" if i < table.label_columns else "right")
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            if i in pairs:
                cells.append(f"[bold]{escape(cell)}[/]\n[dim]{escape(row[i + 1])}[/]")
            elif i not in merged:
                cells.append(escape(cell))
        rich.add_row(*cells)
    return rich


def write_tables(tables: Sequence[Table], directory: str | Path) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.csv`` per table into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in tables:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in table.name)
        md, sheet = directory / f"{stem}.md", directory / f"{stem}.csv"
        md.write_text(to_markdown(table))
        sheet.write_text(to_csv(table))
        written += [md, sheet]
    return written
