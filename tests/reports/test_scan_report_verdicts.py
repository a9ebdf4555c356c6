"""The per-class verdict table of a scan's report.html (poisonlab.reports.scan_report)."""

from __future__ import annotations

from poisonlab.reports.scan_report import _verdict_rows


def test_a_class_the_held_out_check_cleared_says_so() -> None:
    """Named classes first; a class whose group a member's held-out check found to be a
    genuine mode reads "clean (a genuine mode: ...)" with that member, the others plain."""
    summary = {
        "decision": {
            "per_class": {
                "1": {"p_value": 1.0, "level": 0.05, "poisoned": False, "named_by": [],
                      "removed": 0, "modes_found_by": ["activation-clustering"]},
                "6": {"p_value": 1e-6, "level": 0.005, "poisoned": True,
                      "named_by": ["raw-clustering"], "removed": 17},
                "0": {"p_value": 0.4, "level": 0.0056, "poisoned": False, "named_by": [],
                      "removed": 0},
            }
        }
    }  # fmt: skip
    rows = _verdict_rows(summary)
    assert [r[0] for r in rows] == ["6", "0", "1"]
    assert rows[0][1] == "poisoned" and rows[1][1] == "clean"
    assert rows[2][1] == "clean (a genuine mode: held-out check of activation-clustering)"
    assert rows[0][4:] == ["raw-clustering", "17"]


def test_the_defenses_table_says_what_the_terminal_table_says() -> None:
    """report.html's Defenses table once showed only "ran": not which defenses make the combined
    decision, nor the classes each named (heatmap-clustering's verdict appeared nowhere)."""
    from poisonlab.reports.scan_report import _defense_rows

    summary = {
        "defenses": {
            "raw-clustering": {
                "status": "ran", "role": "member of the decision", "flagged": 31,
                "analysed": 300, "threshold": {"rule": "verdict"}, "seconds": 1.5,
                "verdicts": [{"label": 0, "poisoned": False}, {"label": 2, "poisoned": True},
                             {"label": 3, "poisoned": True}],
            },
            "spectral-signatures": {
                "status": "ran", "role": "member of the decision", "flagged": 0, "analysed": 300,
                "threshold": {"rule": "verdict"}, "seconds": 0.5,
                "verdicts": [{"label": 0, "poisoned": False}],
            },
            "heatmap-clustering": {
                "status": "ran", "role": "reported only: measured on Table 1 only",
                "flagged": 9, "analysed": 300, "threshold": {"rule": "verdict"}, "seconds": 9.0,
                "verdicts": [{"label": 1, "poisoned": True}],
            },
            "bnn": {
                "status": "ran", "role": "reported only: no per-class verdict", "flagged": 4,
                "analysed": 300, "threshold": {"rule": "paper"}, "seconds": 2.0, "verdicts": [],
            },
            "deep-features": {"status": "skipped", "reason": "needs a clean held-out set"},
        }
    }  # fmt: skip
    rows = {row[0]: row for row in _defense_rows(summary)}
    assert rows["raw-clustering"][1:4] == ["in the decision", "2–3", "31 / 300"]
    assert rows["spectral-signatures"][1:3] == ["in the decision", "none"]
    assert rows["heatmap-clustering"][1:3] == ["reported only", "1"]
    assert rows["heatmap-clustering"][1].tip == "measured on Table 1 only"  # type: ignore[attr-defined]
    assert rows["bnn"][1:3] == ["reported only", "-"]
    assert rows["deep-features"][1] == "skipped" and rows["deep-features"][-1].startswith("needs")


def test_the_defenses_table_names_no_class_under_a_users_cut() -> None:
    """Under -t contamination:, fpr: or value: the cut decides the flags and the decision says
    "no class verdict": report.html's Defenses table lists no class the verdicts named, as the
    terminal's does not."""
    from poisonlab.reports.scan_report import _defense_rows

    verdicts = [{"label": 0, "poisoned": False}, {"label": 2, "poisoned": True}]
    ran = {"status": "ran", "role": "member of the decision", "flagged": 30, "analysed": 300,
           "seconds": 1.5, "verdicts": verdicts}  # fmt: skip
    cuts = {
        "contamination": {"rule": "contamination", "fraction": 0.1},
        "fpr": {"rule": "target-fpr", "fpr": 0.05, "cutoff": 0.9},
        "value": {"rule": "value", "cutoff": 0.5},
        "verdict": {"rule": "verdict"},
    }
    summary = {"defenses": {name: {**ran, "threshold": cut} for name, cut in cuts.items()}}
    rows = {row[0]: row for row in _defense_rows(summary)}
    assert [rows[name][2] for name in cuts] == ["-", "-", "-", "2"]


def test_thresholds_read_as_the_user_gave_them():
    """-t fpr:0.05 showed as "target-fpr" (a name no option takes) in the terminal table and the
    report, -t contamination:0.1 as "contamination" and -t verdict:0.01 as "verdict"."""
    from poisonlab.reports.scan_report import threshold_text

    assert threshold_text({"rule": "target-fpr", "fpr": 0.05, "cutoff": 1.2}) == "fpr:0.05"
    assert threshold_text({"rule": "contamination", "fraction": 0.1}) == "contamination:0.1"
    assert threshold_text({"rule": "value", "cutoff": 3.2}) == "value:3.2"
    assert threshold_text({"rule": "verdict", "alpha": 0.01}) == "verdict:0.01"
    assert threshold_text({"rule": "verdict", "alpha": 0.05}) == "verdict"
    assert threshold_text({"rule": "paper", "why": "gives no class verdicts"}) == "paper"
    assert threshold_text(None) == ""


def test_the_verdict_table_names_the_classes_that_have_names() -> None:
    """An image folder's classes are its folder names, numbered in sorted order: the table gave
    the numbers alone, and a user had to count folders to find the class it named."""
    verdict = {"p_value": 1e-6, "level": 0.005, "poisoned": True, "named_by": [], "removed": 3}
    summary = {
        "dataset": {"class_names": ["bag", "boot", "coat"]},
        "decision": {"per_class": {"1": verdict, "0": {**verdict, "poisoned": False}}},
    }
    assert [row[0] for row in _verdict_rows(summary)] == ["1 (boot)", "0 (bag)"]
    summary["dataset"]["class_names"] = ["0", "1", "2"]  # numbers: not repeated
    assert [row[0] for row in _verdict_rows(summary)] == ["1", "0"]
