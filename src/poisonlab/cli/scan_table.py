"""The per-defense table `poisonlab scan` prints under its verdict, readable at 80 columns.

One row per defense that ran: its threshold rule, the classes it named, flagged / analysed, its
seconds and, when the data says which samples are poisons, AUROC and TPR. Two things that do not
fit a row at 80 columns go under the table instead of being cut to "…": a one-line legend for
the ``*`` that marks a defense reported only (not part of the combined decision), and the flags
per class, one compact line per defense. When a member named a class that the combined decision
did not, a line says so (otherwise its row reads as contradicting the verdict above it), and so
does a class a defense's held-out check cleared as a genuine mode. No cell is ever shortened: a cell too wide for its
column folds onto a second line, and where output is not a terminal (a pipe, a file, CI) the
table is printed at its full width (:func:`print_whole`), so a log has one line per row.

Rendering is apart from the scan so tests can render it at any width (rich's
``Console(width=80, record=True)``). Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from poisonlab.ranges import class_label

REPORTED_ONLY = "*"
"""Marks a defense whose flags are reported but not part of the combined decision."""


@dataclass(frozen=True)
class DefenseRow:
    """What the table shows for one defense that ran."""

    name: str
    member: bool
    """False when the defense is reported only (summary.json's decision.excluded says why)."""
    threshold: str
    named: str
    """The classes it named (:func:`~poisonlab.ranges.class_ranges`), ``none``, or ``-`` for a defense without
    class verdicts or under a user's cut (:func:`~poisonlab.reports.scan_report.named_text`)."""
    flagged: int
    analysed: int
    per_class: Sequence[int]
    """Flags per class, indexed by class."""
    seconds: float
    auroc: str | None = None
    """Against the data's ``is_poison``, formatted; None when the data does not say."""
    tpr: str | None = None
    overruled: str = ""
    """The classes it named that the combined decision did not (:func:`~poisonlab.ranges.class_ranges`),
    or empty."""
    modes: str = ""
    """The classes whose group its held-out check found to be a genuine mode, so it cleared them
    (:mod:`poisonlab.defenses.holdout_check`), or empty."""


def named_classes_line(named: Sequence[int], class_names: Sequence[str]) -> str | None:
    """``the classes named: 7 (sneaker), 8 (trouser)`` when two or more classes are named and one
    has a name other than its number, else None. The verdict gives several named classes by
    number only, and an image folder numbers its class folders in sorted order (folders 1..10:
    class 1 is folder 10); one named class the verdict names itself."""
    if len(named) < 2:
        return None
    shown = [class_label(int(c), class_names) for c in named]
    if all(s.isdigit() for s in shown):
        return None
    return "the classes named: " + ", ".join(shown)


def per_class_text(counts: Sequence[int]) -> str:
    """Non-zero counts as ``class:count``, e.g. ``1:34 8:31``; ``-`` when nothing is flagged."""
    return " ".join(f"{c}:{n}" for c, n in enumerate(counts) if n) or "-"


def scan_table(title: str, rows: Sequence[DefenseRow]) -> Group:
    """The table, then the legend of :data:`REPORTED_ONLY` (when used) and the flags per class."""
    truth = any(r.auroc is not None for r in rows)
    table = Table(
        title=escape(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    # only the classes named wrap (at their spaces) while the others fit; then cells fold
    table.add_column("defense", no_wrap=True, overflow="fold")
    table.add_column("threshold", no_wrap=True, overflow="fold")
    table.add_column("classes\nnamed", justify="right", overflow="fold")
    table.add_column("flagged/\nanalysed", justify="right", no_wrap=True, overflow="fold")
    table.add_column("seconds", justify="right", no_wrap=True, overflow="fold")
    if truth:
        table.add_column("AUROC", justify="right", no_wrap=True, overflow="fold")
        table.add_column("TPR", justify="right", no_wrap=True, overflow="fold")
    for r in rows:
        cells: list[RenderableType] = [
            Text(r.name if r.member else f"{r.name} {REPORTED_ONLY}"),
            Text(r.threshold),
            Text(r.named),
            f"{r.flagged}/{r.analysed}",
            f"{r.seconds:.2f}",
        ]
        if truth:
            cells += [r.auroc or "-", r.tpr or "-"]
        table.add_row(*cells)
    parts: list[RenderableType] = [table]
    if not all(r.member for r in rows):
        parts.append(
            Text(
                f"{REPORTED_ONLY} reported only: not in the combined decision (summary.json says why)"
            )
        )
    notes = [
        f"{r.name} named {_classes(r.overruled)} on its own; the combined decision, which holds "
        'its members together to one false-alarm level (docs/methods.md, "Combined decision"), '
        "did not"
        for r in rows
        if r.overruled
    ]
    notes += [
        f"{r.name} cleared {_classes(r.modes)}: the clean held-out samples of the class hold its "
        'group at about its rate, a genuine mode, not poisons (docs/methods.md, "With a clean '
        'held-out set")'
        for r in rows
        if r.modes
    ]
    parts += [Text(note) for note in notes]
    per_class = Table.grid(padding=(0, 2))
    per_class.add_column(no_wrap=True)
    per_class.add_column(overflow="fold")
    for r in rows:
        per_class.add_row(Text(r.name), Text(per_class_text(r.per_class)))
    parts += [Text("flagged per class (class:count):"), _indented(per_class)]
    return Group(*parts)


def _classes(ranges: str) -> str:
    """``class 1`` or ``classes 1, 3`` for a :func:`~poisonlab.ranges.class_ranges` text."""
    return f"{'class' if ranges.isdigit() else 'classes'} {ranges}"


def _indented(renderable: RenderableType) -> RenderableType:
    from rich.padding import Padding

    return Padding(renderable, (0, 0, 0, 2), expand=False)


def print_whole(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable`` at the console's width on a terminal; elsewhere (a pipe, a file, CI)
    at least at its natural width, so every table row stays on one line of the log."""
    natural = Measurement.get(console, console.options.update_width(10_000), renderable).maximum
    if console.is_terminal or natural <= console.width:
        console.print(renderable)
        return
    saved = console._width  # print(width=...) cannot exceed the console's own width
    console.width = natural
    try:
        console.print(renderable)
    finally:
        console._width = saved
