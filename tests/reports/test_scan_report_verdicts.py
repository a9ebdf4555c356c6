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
