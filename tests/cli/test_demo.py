"""`poisonlab demo` end to end: the quick tour through the CLI, its summary, report and resume.

The quick tour (:data:`poisonlab.workflows.demo.QUICK`: 300 digits images, 1–2 epochs, every
defense) runs once per module; the full tour (minutes) is marked slow.
"""

from __future__ import annotations

import math
import re

import pytest
from typer.testing import CliRunner

from poisonlab.cli import demo_cmd
from poisonlab.cli.main import app
from poisonlab.experiments.runner import plan
from poisonlab.reports.records import load_records
from poisonlab.workflows.demo import (
    BACKDOOR,
    BACKDOOR_DEFENSES,
    COLLISION,
    COLLISION_DEFENSES,
    QUICK,
    demo_configs,
    run_demo,
    summary_rows,
)

runner = CliRunner()
DEFENSES = (*BACKDOOR_DEFENSES, *COLLISION_DEFENSES)
NUMBER = r"(\d+\.\d|nan)"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """The quick tour run once through ``poisonlab demo`` into a fresh folder."""
    out = tmp_path_factory.mktemp("demo") / "out"
    patch = pytest.MonkeyPatch()
    patch.setattr(demo_cmd, "SETTINGS", QUICK)
    try:
        result = runner.invoke(app, ["demo", "--out", str(out), "--quiet"], terminal_width=120)
    finally:
        patch.undo()
    return out, result


def test_every_defense_is_configured_and_none_is_left_out():
    from poisonlab.defenses import detector_names

    backdoor, collision = demo_configs(QUICK)
    configured = {d["name"] for d in backdoor.defenses} | {d["name"] for d in collision.defenses}
    assert configured == set(DEFENSES) == set(detector_names())  # a new detector joins the demo
    assert backdoor.attack["label_map"] == "all-to-all"
    assert collision.task["protocol"] == "transfer"


def test_quick_demo_prints_one_row_of_numbers_per_defense(quick_demo):
    out, result = quick_demo
    assert result.exit_code == 0, result.output
    text = result.output
    for name in DEFENSES:
        row = re.search(rf"^\s*{re.escape(name)}( \(\d+\))?\s+(.*)$", text, re.MULTILINE)
        assert row, f"no summary row for {name}:\n{text}"
        numbers = re.findall(NUMBER, row.group(2))
        assert len(numbers) >= 4, row.group(0)  # AUROC, TPR, TNR and seconds at least
    for label in ("cnn-small CE", "lgm-net CE", "lgm-net LGM", "BadNets → cnn-small CE"):
        assert re.search(rf"{re.escape(label)}\s+\d+\.\d", text), label
    assert str(out / "report.html") in text.replace("\n", "")


def test_quick_demo_writes_a_self_contained_report(quick_demo):
    out, result = quick_demo
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') >= 6
    for part in ("Summary", "BadNets backdoor", "Feature collision", "2-d feature space"):
        assert part in page
    assert "Most suspicious samples: heatmap-clustering" in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no external links
    assert (out / "runs" / "results.sqlite").is_file()


def test_the_store_holds_real_numbers_and_a_second_run_would_skip_everything(quick_demo):
    out, first = quick_demo
    assert first.exit_code == 0, first.output
    runs = out / "runs"
    configs = demo_configs(QUICK)
    for config in configs:
        assert [(p.status, p.run) for p in plan(config, runs)] == [("done", False)]
    metrics = {c.name: load_records(runs, c.name)[0].metrics for c in configs}
    rows = summary_rows(metrics[BACKDOOR], metrics[COLLISION], QUICK)
    defenses = {row.item.split(" (")[0]: row for row in rows if row.group.startswith("defen")}
    assert set(defenses) == set(DEFENSES)
    for name, row in defenses.items():
        for value in (row.auroc, row.tpr, row.tnr):
            assert value is not None and math.isfinite(value) and 0 <= value <= 1, name
    accuracies = [row.clean_accuracy for row in rows if row.group == "models"]
    assert len(accuracies) == 3 and all(0 < a <= 1 for a in accuracies)


def test_a_folder_without_a_demo_is_refused_unless_forced(tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["demo", "--out", str(folder), "--quiet"])
    assert result.exit_code == 2
    assert "holds no demo" in result.output and (folder / "notes.txt").exists()


def test_help_names_the_steps_and_the_outputs():
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for phrase in ("feature-collision poisons", "heatmap clustering", "OUT/report.html", "--force"):
        assert phrase in text, phrase


@pytest.mark.slow
def test_full_demo(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = run_demo(tmp_path / "demo")  # resumes: reads the stored metrics
    attack = next(row for row in summary.rows if row.item.startswith("BadNets"))
    assert attack.attack is not None and attack.attack > 0.5  # the backdoor took
    auroc = {row.item: row.auroc for row in summary.rows if row.auroc is not None}
    assert auroc["activation-clustering"] > 0.9
    assert auroc["lgm-likelihood"] > 0.9


def test_force_starts_over_and_a_demo_folder_is_resumed(tmp_path):
    folder = tmp_path / "demo"
    (folder / "runs").mkdir(parents=True)
    (folder / "runs" / "results.sqlite").write_bytes(b"")
    assert demo_cmd.demo_folder(folder, force=False) is True  # resumed, left alone
    assert (folder / "runs" / "results.sqlite").exists()
    assert demo_cmd.demo_folder(folder, force=True) is False
    assert folder.is_dir() and not any(folder.iterdir())
