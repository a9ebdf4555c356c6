"""The smaller things a new user hit (issue 13, item 9), each replayed."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import poisonlab.data.loaders
from poisonlab.cli import console, run_cmd
from poisonlab.cli.main import app
from poisonlab.experiments.runner import CellResult, RunSummary

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"


def test_python_dash_m_poisonlab_is_the_cli():
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    version = subprocess.run(
        [sys.executable, "-m", "poisonlab", "--version"], capture_output=True, text=True, env=env
    )
    assert version.returncode == 0 and version.stdout.startswith("poisonlab "), version.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "poisonlab", "data", "info", "no/such.npz"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 2 and "no/such.npz: no such file" in missing.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "poisonlab", "scan", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "Usage: poisonlab scan" in helped.stdout


def test_ctrl_c_outside_an_output_folder_is_one_line_and_130(monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(poisonlab.data.loaders, "load_dataset", interrupt)
    result = runner.invoke(app, ["data", "info", "digits"])
    assert result.exit_code == 130
    assert result.output.strip() == "interrupted"


def test_attack_says_the_test_part_shrank_and_warns_of_a_weak_backdoor(tmp_path):
    """--limit shrinks the test part too (now said); a backdoor the victim barely learned
    (one epoch on 300 images) gets a warning with its ASR."""
    out = tmp_path / "bn"
    args = ["attack", "badnets", "--limit", "300", "--victim-epochs", "1", "-o", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "attack.json").read_text())
    text = " ".join(result.output.split())
    test_images = report["counts"]["test"]
    assert test_images < 360  # digits' test part is 360 images without --limit
    assert f"measured on {test_images} test images (--limit shrank it" in text
    asr = report["metrics"]["victim"]["asr"]
    assert asr < 0.9
    # the log's WARNING line, as every command warns (a user greps for WARNING), not "warning:"
    assert (
        f"WARNING the victim learned the backdoor poorly: ASR {100 * asr:.1f}% (below 90%)" in text
    )
    assert "warning:" not in text


@contextlib.contextmanager
def cli_log() -> Iterator[io.StringIO]:
    """The commands' log set-up (console.configure) writing to a string off a terminal; the
    root logger's handlers and level are restored after."""
    handlers, level = logging.root.handlers[:], logging.root.level
    stream = io.StringIO()
    try:
        with contextlib.redirect_stderr(stream):  # the err console writes to sys.stderr
            console.configure(quiet=True)
            yield stream
    finally:
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)


def _warnings(caplog) -> str:
    """The WARNING records since the last call, one line each, cleared."""
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    caplog.clear()
    return text


def test_strong_backdoor_gets_no_warning(caplog, capsys):
    from poisonlab.cli.attack_cmd import warn_low_asr

    warn_low_asr({"victim": {"asr": 0.97}})
    warn_low_asr({"victim (transfer)": {"asr": 0.1}})  # not a backdoor victim
    assert _warnings(caplog) == "" and capsys.readouterr().err == ""


def test_a_weak_reduced_amplitude_checkerboard_is_told_to_grow_its_amplitude(caplog):
    """The help's own example (label-consistent, --trigger checkerboard --amplitude 64) was told
    to switch to "a larger trigger (--trigger square --size 3)"; other triggers still are."""
    from poisonlab.cli.attack_cmd import warn_low_asr

    warn_low_asr({"victim": {"asr": 0.0}}, {"trigger": "checkerboard", "amplitude": 64})
    checkerboard = _warnings(caplog)
    assert "a stronger trigger (--amplitude above 64, up to 255)" in checkerboard
    assert "--trigger square" not in checkerboard
    warn_low_asr({"victim": {"asr": 0.5}}, {"trigger": "pattern", "amplitude": None})
    assert "a larger trigger (--trigger square --size 3)" in _warnings(caplog)


def test_a_collision_that_moved_no_target_warns_with_the_beta0_hint(caplog, capsys):
    """Issue: `poisonlab attack feature-collision` (digits, the default data) reported 0% of its
    targets without a word: the default β0 is the 28×28 one, and 8×8 digits need about 6e-5
    (80% of 5 targets with --beta0 6e-5 on this machine)."""
    from poisonlab.attacks.collision_craft import CollisionSettings
    from poisonlab.cli.attack_cmd import warn_no_collision

    none = {"victim (transfer)": {"success_rate": {"successes": 0, "n": 5}}}
    warn_no_collision(none, {"beta0": CollisionSettings.beta0, "input_dim": 64})
    text = _warnings(caplog)
    assert "no victim misclassified any of the 5 targets" in text
    assert "8×8 digits need about --beta0 6e-5" in text
    with cli_log() as err:  # as the command shows it off a terminal: one line
        warn_no_collision(none, {"beta0": CollisionSettings.beta0, "input_dim": 64})
    line = err.getvalue()
    assert line.startswith("WARNING  no victim misclassified any of the 5 targets: ")
    assert line.count("\n") == 1
    warn_no_collision(none, {"beta0": 1e-4, "input_dim": 64})  # the user chose β0: general hint
    assert "a larger --beta0" in _warnings(caplog)
    warn_no_collision({"victim (transfer)": {"success_rate": {"successes": 1, "n": 5}}}, {})
    warn_no_collision({"victim": {"asr": 0.1}}, {})  # a backdoor's metrics: not for this warning
    assert _warnings(caplog) == ""


def test_the_demo_warns_of_a_half_learned_backdoor_through_the_log(capsys, tmp_path):
    """demo printed its own "warning:" line beside the log's WARNING lines of every command."""
    from poisonlab.cli.demo_cmd import print_summary
    from poisonlab.reports.demo import BACKDOOR, DemoResult, DemoSettings

    result = DemoResult(
        out=tmp_path,
        runs=tmp_path / "runs",
        report=tmp_path / "report.html",
        summaries=(),
        blocks=(),
        settings=DemoSettings(),
        metrics={BACKDOOR: {"attack.asr": 0.42}},
    )
    with cli_log() as log:
        print_summary(result, 1.0)
    err = log.getvalue() + capsys.readouterr().err
    assert err.startswith(
        "WARNING  the BadNets attack reached only 42.0% success: the backdoor defenses above "
        "were tested against a half-learned backdoor.\n"
    )
    assert "warning:" not in err


def summary() -> RunSummary:
    metrics = {
        "model.clean_accuracy": 0.9812,
        "attack.asr": 0.991,
        "defense.activation-clustering.auroc": 0.9934,
        "defense.spectral-signatures.auroc": 0.8812,
        "defense.deep-features.aupr": 0.7512,
        "defense.heatmap-clustering.auroc": 0.6612,
    }
    cells = tuple(
        CellResult(
            f"{i}abcdef0123456789",
            i,
            f"data.source=fashion-mnist attack.rate={rate} defense.name=all seed={i}",
            "done",
            True,
            1234.5,
            metrics,
            None,
            1,
        )
        for i, rate in enumerate((0.1, 0.3, 0.5))
    )
    return RunSummary("seed002-table1-2-3", "runs", "local", cells, 400.0)


@pytest.mark.parametrize("terminal", [False, True])
def test_run_summary_uncut_one_line_per_row_in_a_log(monkeypatch, tmp_path, terminal):
    """As in scan and demo: in a log (no terminal) each table row and the totals line stay on one
    line (they were broken at 80 columns mid-description); on a terminal of 80 columns every line
    fits it. Neither cuts a value with an ellipsis."""
    log = tmp_path / "log.txt"
    with log.open("w") as handle:
        screen = Console(file=handle, width=80, force_terminal=terminal, color_system=None)
        monkeypatch.setattr(run_cmd, "out", screen)
        run_cmd.print_summary(summary())
    text = log.read_text()
    lines = text.splitlines()
    assert "…" not in text
    for value in ("0.9812", "0.991", "0.9934", "0.8812", "0.6612", "1234.5", "0abcdef0"):
        assert value in text
    assert "1 more metrics: poisonlab table runs" in text
    if terminal:
        assert max(len(line) for line in lines) <= 80
        assert "seed=2" in text
        return
    row = "data.source=fashion-mnist attack.rate=0.5 defense.name=all seed=2 │ 2abcdef0 │ done"
    assert any(row in line for line in lines), text
    totals = "3 done (3 now), 0 failed, 0 skipped, 0 pending in 400.0 s; results in "
    assert totals + str(Path("runs") / "results.sqlite") in lines


def test_run_dry_run_lists_one_line_per_cell_in_a_log(tmp_path):
    """The --dry-run table follows the same rule: off a terminal a long cell description is not
    folded at 80 columns."""
    import tests.experiments.fake_tasks  # noqa: F401  (registers test-sleep)

    long = "quite-a-long-mode-name-that-pushes-the-description-past-80-columns"
    config = tmp_path / "exp.toml"
    config.write_text(f'name = "cli"\nkind = "test-sleep"\n[task]\nmode = ["{long}", "b"]\n')
    args = ["run", str(config), "--runs", str(tmp_path / "runs"), "--dry-run"]
    result = runner.invoke(app, args, terminal_width=80)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if f"mode={long} │" in line]
    assert len(rows) == 1 and all(" │ new    │ yes │" in row for row in rows), result.output


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("defense.activation-clustering.auroc", "defense.\nactivation-\nclustering.\nauroc"),
        ("attack.asr", "attack.asr"),
    ],
)
def test_stacked_header(name, header):
    assert run_cmd.stacked_header(name) == header


def test_console_streams_are_the_ones_commands_print_to():
    assert console.err.stderr and not console.out.stderr


def test_data_info_says_when_the_file_marks_its_poisons(tmp_path):
    """An attack's .npz carries is_poison, which `scan` scores against: `data info` says so."""
    from poisonlab.attacks import build_attack
    from poisonlab.data import save_npz
    from poisonlab.seeding import make_generator
    from tests.conftest import blobs_dataset

    clean = save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "clean.npz")
    attack = build_attack("badnets", source=0, target=1, count=5, trigger="square", size=2)
    poisoned = attack.poison(blobs_dataset(n_per_class=20, seed=0), generator=make_generator(0))
    poisoned.save(tmp_path / "poisoned.npz")
    marked = runner.invoke(app, ["data", "info", str(tmp_path / "poisoned.npz")])
    assert marked.exit_code == 0, marked.output
    assert "ground truth" in marked.output and "is_poison: 5 poisons" in marked.output
    plain = runner.invoke(app, ["data", "info", str(clean)])
    assert plain.exit_code == 0, plain.output
    assert "ground truth" not in plain.output


def test_collision_success_is_shown_with_its_interval():
    """A feature-collision attack has few targets (20 in the help's example): its success rate
    was shown as a bare "ASR 80.00%" beside an empty MASR, without the Wilson interval that
    attack.json holds (58.4–91.9% for 16 of 20)."""
    from types import SimpleNamespace

    from poisonlab.cli.attack_cmd import _summary_table

    rate = {"successes": 16, "n": 20, "rate": 0.8, "low": 0.5839825677, "high": 0.9193423374}
    metrics = {
        "victim (transfer)": {"clean_accuracy": 0.9816, "asr": 0.8, "masr": None,
                              "success_rate": rate},
    }  # fmt: skip
    poisoned = SimpleNamespace(n_poison=20, dataset=range(1278))
    recorder = Console(width=100, record=True)
    recorder.print(_summary_table("feature-collision", poisoned, metrics))  # type: ignore[arg-type]
    text = recorder.export_text()
    assert "success" in text and "95% interval" in text and "ASR" not in text
    assert "80.00%" in text and "58.4–91.9%" in text
    backdoor = {"victim": {"clean_accuracy": 0.99, "asr": 0.95, "masr": 0.94}}
    recorder.print(_summary_table("badnets", poisoned, backdoor))  # type: ignore[arg-type]
    text = recorder.export_text()
    assert "MASR" in text and "94.00%" in text


def test_attack_help_names_the_model_folders_it_writes():
    """`attack` wrote DIR/victim/ (and model/, baseline/) that neither its help nor README named,
    though the victim is the model a scan of poisoned.npz can reuse instead of training."""
    result = runner.invoke(app, ["attack", "--help"], env={"COLUMNS": "200"})
    flat = " ".join(result.output.split())
    assert "DIR/victim/ (trained on poisoned.npz" in flat
    assert "DIR/baseline/ with --baseline" in flat and "DIR/model/ when feature-collision" in flat
