"""The per-defense table of `poisonlab scan` at 80 columns and beyond (poisonlab.cli.scan_table).

Issue: at 80 columns (a normal terminal, or any pipe, where rich assumes 80) every cell was cut
to "ve…", "0.…", "1,8" because eight columns did not fit. The rows below are the digits case of
that report (1828 samples, seven defenses, four of them reported only).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from poisonlab.cli.scan_table import (
    DefenseRow,
    per_class_text,
    print_whole,
    scan_table,
)
from poisonlab.ranges import class_ranges, counted

TITLE = "scan of digits_case: 1828 samples, 10 classes"
ROWS = [
    DefenseRow("activation-clustering", True, "verdict", "1, 8", 65, 1828,
               [0, 32, 0, 0, 0, 0, 0, 0, 33, 0], 2.14, "0.912", "1.000"),
    DefenseRow("bnn", False, "paper", "-", 183, 1828,
               [3, 41, 6, 26, 11, 18, 9, 11, 42, 16], 3.04, "0.761", "0.935"),
    DefenseRow("heatmap-clustering", False, "verdict", "none", 0, 1828, [0] * 10, 8.18,
               "0.530", "0.000"),
    DefenseRow("lgm-likelihood", False, "paper", "-", 18, 1828,
               [0, 8, 0, 0, 0, 0, 1, 0, 7, 2], 0.13, "0.702", "0.226"),
    DefenseRow("raw-clustering", True, "verdict", "8", 31, 1828,
               [0, 0, 0, 0, 0, 0, 0, 0, 31, 0], 1.86, "0.990", "1.000"),
]  # fmt: skip


WIDE = DefenseRow("spectral-signatures", True, "contamination", "0, 2, 4, 6, 8, 11–14, 17",
                  1828, 1828, [180] * 10, 1234.5, "0.500", "1.000")  # fmt: skip


def render(width: int, rows=ROWS, terminal: bool = True) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=terminal)
    print_whole(console, scan_table(TITLE, rows))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 200])
def test_every_cell_is_whole_at_80_columns_and_wider(width):
    text = render(width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    lines = text.splitlines()
    row = {r.name: next(line for line in lines if line.startswith(r.name + " ")) for r in ROWS}
    # one line per defense, with its rule, classes named, flagged/analysed, seconds, AUROC, TPR
    assert row["activation-clustering"].split() == [
        "activation-clustering", "verdict", "1,", "8", "65/1828", "2.14", "0.912", "1.000"
    ]  # fmt: skip
    assert row["bnn"].split()[:5] == ["bnn", "*", "paper", "-", "183/1828"]
    assert row["raw-clustering"].split()[2:4] == ["8", "31/1828"]
    assert row["heatmap-clustering"].split()[1:4] == ["*", "verdict", "none"]
    # the marker is explained once, under the table
    assert sum("* reported only: not in the combined decision" in line for line in lines) == 1
    # the flags per class, every class, after the table
    per_class = lines.index("flagged per class (class:count):")
    below = "\n".join(lines[per_class:])
    assert "bnn                    0:3 1:41 2:6 3:26 4:11 5:18 6:9 7:11 8:42 9:16" in below
    assert "activation-clustering  1:32 8:33" in below
    assert lines[0].startswith(TITLE)


def test_without_ground_truth_there_are_no_auroc_columns_and_no_legend_when_all_combine():
    rows = [DefenseRow(r.name, True, r.threshold, r.named, r.flagged, r.analysed, r.per_class,
                       r.seconds) for r in ROWS]  # fmt: skip
    text = render(80, rows)
    assert "AUROC" not in text and "TPR" not in text
    assert "reported only" not in text and "*" not in text


def test_a_cell_too_wide_folds_on_a_terminal_and_stays_one_line_in_a_log():
    """A long rule and many named classes: on an 80-column terminal the cell folds onto a
    second line (never "…"); off a terminal the table is printed at its full width."""
    on_terminal = render(80, [*ROWS, WIDE])
    assert "…" not in on_terminal
    assert max(len(line) for line in on_terminal.splitlines()) <= 80
    lines = on_terminal.splitlines()
    first = next(i for i, x in enumerate(lines) if x.startswith("spectral-signatures "))
    row = lines[first].split()
    assert row[0] == "spectral-signatures" and row[-4:] == [
        "1828/1828",
        "1234.50",
        "0.500",
        "1.000",
    ]
    assert row[1] == "contamination"  # whole; the classes named wrap at their spaces
    named = row[2:-4] + [w for line in lines[first + 1 : first + 4] for w in line.split()]
    assert " ".join(named) == "0, 2, 4, 6, 8, 11–14, 17"
    assert console_width_unchanged()
    in_a_log = render(80, [*ROWS, WIDE], terminal=False)
    line = next(x for x in in_a_log.splitlines() if x.startswith("spectral-signatures "))
    assert line.split() == [
        "spectral-signatures", "contamination", "0,", "2,", "4,", "6,", "8,", "11–14,", "17",
        "1828/1828", "1234.50", "0.500", "1.000",
    ]  # fmt: skip


def console_width_unchanged() -> bool:
    """print_whole widens a log's console only for its own print."""
    console = Console(width=80, record=True, file=io.StringIO(), force_terminal=False)
    print_whole(console, scan_table(TITLE, [*ROWS, WIDE]))
    wider = max(len(line) for line in console.export_text().splitlines())
    return wider > 80 and console.width == 80


def test_names_are_shown_as_given_not_read_as_markup():
    row = DefenseRow("raw-clustering", True, "verdict", "8", 1, 10, [0, 1], 0.1)
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(scan_table("scan of [bold]odd[/bold] name", [row]))
    assert "scan of [bold]odd[/bold] name" in console.export_text()


def test_class_ranges_read_like_the_verdict():
    assert class_ranges([0, 1, 2, 3, 5, 6, 7, 8, 9]) == "0–3, 5–9"
    assert class_ranges([8, 1]) == "1, 8"
    assert class_ranges([]) == "none"


def test_counts_take_the_singular_for_one():
    assert counted(1, "sample") == "1 sample" and counted(0, "sample") == "0 samples"
    assert counted(2, "class") == "2 classes" and counted(1, "class") == "1 class"
    assert counted(3, "suspicious sample") == "3 suspicious samples"
    assert counted(2, "child", "children") == "2 children"


def test_per_class_text_lists_every_nonzero_class():
    assert per_class_text([0, 3, 0, 12]) == "1:3 3:12"
    assert per_class_text([0, 0]) == "-"


def test_a_member_naming_a_class_the_decision_did_not_is_explained():
    """AC named 1 and 8 on its own, the combined decision only 8: a line under the table says
    so, whole at 80 columns, instead of leaving the row to contradict the verdict."""
    rows = [replace(ROWS[0], overruled="1"), ROWS[4]]
    text = render(80, rows)
    assert "…" not in text
    flat = " ".join(text.split())
    assert "activation-clustering named class 1 on its own; the combined decision" in flat
    assert flat.count("on its own") == 1  # raw clustering named only what the decision named
    assert "named classes 1, 3 on its own" in " ".join(
        render(200, [replace(ROWS[0], overruled="1, 3")]).split()
    )


def fake_result(verdicts: list, threshold: dict | None = None) -> SimpleNamespace:
    """A detector result as summary_rows reads it: these verdicts, nothing flagged, 4 samples."""
    import torch

    return SimpleNamespace(
        threshold=threshold or {"rule": "verdict"},
        verdicts=verdicts,
        poisoned_classes=[v.label for v in verdicts if v.poisoned],
        flagged=torch.zeros(4, dtype=torch.bool),
        analysed=torch.ones(4, dtype=torch.bool),
        flagged_per_class=lambda labels, k: [0] * k,
        seconds=0.1,
    )


def fake_scan(ran: dict, rule: str = "verdict", excluded: dict | None = None) -> SimpleNamespace:
    """A scan result of these {defense: result} that named class 8, as summary_rows reads it."""
    import torch

    decision = SimpleNamespace(excluded=excluded or {}, rule=rule, poisoned_classes=[8])
    data = SimpleNamespace(labels=torch.zeros(4), num_classes=10)
    outcomes = [SimpleNamespace(name=name, result=r) for name, r in ran.items()]
    return SimpleNamespace(data=data, decision=decision, ran=outcomes)


def test_summary_rows_find_the_classes_only_a_member_named():
    from poisonlab.cli.scan_cmd import summary_rows
    from poisonlab.defenses.verdicts import ClassVerdict

    def result(named: list[int]) -> SimpleNamespace:
        return fake_result([ClassVerdict(c, True, 0.0, 0.0, 0.05, 1, None, 4) for c in named])

    ran = {
        "activation-clustering": result([1, 8]),
        "raw-clustering": result([8]),
        "heatmap-clustering": result([3]),  # reported only
        "bnn": result([]),
    }

    def scan(rule: str) -> SimpleNamespace:
        return fake_scan(ran, rule, excluded={"heatmap-clustering": "why"})

    rows = {r.name: r.overruled for r in summary_rows(scan("verdict"))}  # type: ignore[arg-type]
    assert rows == {
        "activation-clustering": "1",
        "raw-clustering": "",
        "heatmap-clustering": "",
        "bnn": "",
    }
    # under a user's threshold the decision names nothing by design: no such line
    assert all(not r.overruled for r in summary_rows(scan("fpr:0.05")))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("threshold", "named"),
    [
        ({"rule": "verdict"}, "1, 8"),
        ({"rule": "paper"}, "1, 8"),  # its flags follow the paper; the decision its verdicts
        ({"rule": "contamination", "fraction": 0.1}, "-"),
        ({"rule": "target-fpr", "fpr": 0.05, "cutoff": 0.9}, "-"),
        ({"rule": "value", "cutoff": 0.5}, "-"),
    ],
)
def test_under_a_users_cut_no_classes_named_as_the_verdict_says(threshold, named):
    """Issue: with -t contamination:, fpr: or value: the verdict line read "(no class verdict)"
    while the row still listed the classes the defense's verdicts named: the user's cut
    decides its flags (docs/methods.md, "Verdicts and the combined decision"), so "-"."""
    from poisonlab.cli.scan_cmd import summary_rows
    from poisonlab.defenses.verdicts import ClassVerdict

    verdicts = [ClassVerdict(c, c != 0, 0.0, 0.0, 0.05, 1, None, 4) for c in (0, 1, 8)]
    scan = fake_scan({"activation-clustering": fake_result(verdicts, threshold)})
    (row,) = summary_rows(scan)  # type: ignore[arg-type]
    assert row.named == named


def test_a_class_the_held_out_check_cleared_is_explained():
    """A member named class 1, and its held-out check found the group in the clean held-out 1s
    at about its rate: a line says the class was cleared as a genuine mode, whole at 80 columns;
    summary_rows reads it from the verdicts' held-out records."""

    from poisonlab.cli.scan_cmd import summary_rows
    from poisonlab.defenses.verdicts import ClassVerdict

    text = render(80, [replace(ROWS[0], modes="1"), ROWS[4]])
    assert "…" not in text
    flat = " ".join(text.split())
    assert "activation-clustering cleared class 1: the clean held-out samples of the class" in flat
    assert flat.count(" cleared ") == 1

    mode = {"mode": True, "above_cutoff": 9, "held_out": 36}
    kept = {"mode": False, "above_cutoff": 0, "held_out": 36}
    result = fake_result(
        [
            ClassVerdict(1, False, 0.0, 0.0, 0.05, 1, None, 4, holdout=mode),
            ClassVerdict(8, True, 0.0, 0.0, 0.05, 1, None, 4, holdout=kept),
            ClassVerdict(3, False, 0.0, 1.0, 0.05, 0, None, 4),
        ]
    )
    scan = fake_scan({"activation-clustering": result})
    (row,) = summary_rows(scan)  # type: ignore[arg-type]
    assert (row.modes, row.overruled) == ("1", "")
    # under a user's threshold its flags do not follow the verdicts: no "cleared" line
    result.threshold = {"rule": "target-fpr"}
    (row,) = summary_rows(scan)  # type: ignore[arg-type]
    assert row.modes == ""


def test_a_verdict_without_a_held_out_set_hints_at_one():
    """Classes named without --holdout: one line says a clean held-out set would check them for
    genuine modes; nothing with a held-out set, nothing named, or under a user's threshold."""
    from poisonlab.cli.scan_cmd import holdout_hint

    def scan(named: list[int], holdout: object = None, rule: str = "verdict") -> SimpleNamespace:
        decision = SimpleNamespace(rule=rule, poisoned_classes=named)
        return SimpleNamespace(decision=decision, holdout=holdout)

    hint = holdout_hint(scan([8]))  # type: ignore[arg-type]
    assert hint is not None and hint.startswith("no --holdout: a named class may also be")
    # it cited "With a clean held-out set", which methods.md has in four unrelated places before
    # the section meant: the section heading and the paragraph's lead-in are named now
    assert (
        'docs/methods.md, "Verdicts and the combined decision", "With a clean held-out set: '
        in hint
    )
    methods = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    assert "## Verdicts and the combined decision" in methods
    assert "**With a clean held-out set: the held-out check**" in methods
    assert holdout_hint(scan([8], holdout=object())) is None  # type: ignore[arg-type]
    assert holdout_hint(scan([])) is None  # type: ignore[arg-type]
    assert holdout_hint(scan([8], rule="fpr:0.05")) is None  # type: ignore[arg-type]


def test_several_named_classes_are_given_their_names():
    """The verdict gives several named classes by number only ("classes 7–8 look poisoned"): with
    an image folder's class folders, a user had to count folders in sorted order to find them,
    and folders 1..10 number folder 10 as class 1."""
    from poisonlab.cli.scan_table import named_classes_line

    names = ("bag", "boot", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "trouser")
    assert named_classes_line([7, 8], names) == "the classes named: 7 (sneaker), 8 (trouser)"
    folders = tuple(sorted(str(k) for k in range(1, 11)))  # 1, 10, 2, ...
    assert named_classes_line([1, 3], folders) == "the classes named: 1 (10), 3"
    assert named_classes_line([1, 3], [str(k) for k in range(10)]) is None  # numbers: no line
    assert named_classes_line([8], names) is None  # the verdict names one class itself
