"""The three papers' reduced grids (experiments/ci/) run end to end and fill their published tables.

These are the CI variants of the shipped configs: real data (digits), real training, real
attacks and defenses, at a size that takes seconds to a minute. They check that the whole
pipeline (config -> runner -> tasks -> store -> paper-style table) works, not the papers'
numbers; RESULTS.md holds those.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app

CI = Path(__file__).resolve().parents[2] / "experiments" / "ci"
cli = CliRunner()

# config -> (paper table, metrics every finished cell must hold as finite numbers)
PAPER_GRIDS = {
    "yaseen2020.toml": ("seed000", ["collision.ce.success_rate", "collision.lgm.success_rate"]),
    "subedar2019-table1-2-3.toml": ("seed002-table3", ["accuracy.dnn.clean"]),
    "schulth2022-table1.toml": ("seed004-table1", ["defense.activation-clustering.acc"]),
}


def _cells(runs: Path) -> list[tuple[str, str, dict]]:
    with sqlite3.connect(runs / "results.sqlite") as db:
        rows = db.execute("select experiment, status, metrics from cells").fetchall()
    return [(e, s, json.loads(m) if m else {}) for e, s, m in rows]


@pytest.mark.parametrize("config", sorted(PAPER_GRIDS))
def test_reduced_paper_grid_runs_and_fills_its_table(config, tmp_path):
    runs = tmp_path / "runs"
    result = cli.invoke(app, ["run", str(CI / config), "--runs", str(runs), "-q"])
    assert result.exit_code == 0, result.output
    cells = _cells(runs)
    assert cells and all(status == "done" for _, status, _ in cells), cells
    table, required = PAPER_GRIDS[config]
    for _, _, metrics in cells:
        for key in required:
            if key in metrics:  # e.g. a clean (rate 0) cell has no attack-specific keys
                assert math.isfinite(metrics[key]), (key, metrics[key])
    assert any(key in metrics for _, _, metrics in cells for key in required)

    if table != "seed000":  # Yaseen et al. 2020 publishes plots, not a table
        shown = cli.invoke(app, ["table", str(runs), "--like", table])
        assert shown.exit_code == 0, shown.output
        assert list((runs / "tables").glob(f"*{table}.md")), shown.output
