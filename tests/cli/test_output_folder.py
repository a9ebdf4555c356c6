"""--force and output folders as a user met them (issue: --force deleted a finished scan before
the new run had succeeded, and a failed command left an empty folder behind)."""

from __future__ import annotations

import hashlib

import pytest
from typer.testing import CliRunner

import poisonlab.workflows.scan
from poisonlab.cli.attack_cmd import ATTACK_FILES
from poisonlab.cli.main import app
from poisonlab.cli.output import PARTIAL, output_folder
from poisonlab.cli.scan_cmd import SCAN_FILES
from poisonlab.cli.train_cmd import TRAIN_FILES
from poisonlab.data import save_npz
from poisonlab.errors import ConfigError, DataError
from tests.conftest import blobs_dataset

runner = CliRunner()


def snapshot(folder) -> dict[str, str]:
    """Every file under ``folder`` (relative path → sha256)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith((PARTIAL, ".old"))]


@pytest.fixture
def scanned(tmp_path):
    """data.npz and a finished scan of it in tmp_path/out."""
    data = save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "data.npz")
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(data), "-D", "raw-clustering", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return data, out


def scan(data, out, *extra: str):
    return runner.invoke(app, ["scan", str(data), "-D", "raw-clustering", "-o", str(out), *extra])


def test_a_scan_writes_only_the_names_force_may_replace(scanned):
    _, out = scanned
    assert {p.name for p in out.iterdir()} <= set(SCAN_FILES)
    assert {"scores.csv", "summary.json", "clean.npz", "report.html"} <= {
        p.name for p in out.iterdir()
    }


def test_interrupted_force_keeps_the_earlier_scan(scanned, monkeypatch):
    """Ctrl-C during a --force rescan: exit 130, one line saying the old results are kept."""
    data, out = scanned
    before = snapshot(out)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(poisonlab.workflows.scan, "scan", interrupt)
    result = scan(data, out, "--force")
    assert result.exit_code == 130, result.output
    assert f"interrupted: the earlier results in {out} are unchanged" in result.output
    assert snapshot(out) == before
    assert leftovers(out.parent) == []


def test_failing_force_keeps_the_earlier_scan(scanned, monkeypatch):
    data, out = scanned
    before = snapshot(out)

    def broken(*args, **kwargs):
        raise DataError("the data went bad halfway")

    monkeypatch.setattr(poisonlab.workflows.scan, "scan", broken)
    result = scan(data, out, "--force")
    assert result.exit_code == 2 and "the data went bad halfway" in result.output
    assert snapshot(out) == before
    assert leftovers(out.parent) == []


def test_force_refuses_a_folder_with_the_users_files(scanned):
    data, out = scanned
    (out / "my notes.txt").write_text("mine")
    before = snapshot(out)
    result = scan(data, out, "--force")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "holds files this command does not write (my notes.txt)" in text
    assert snapshot(out) == before


def test_force_names_another_commands_result_as_not_its_own(tmp_path):
    """A train folder given to attack --force was said to hold files "poisonlab did not write"."""
    from poisonlab.cli.output import check_output_dir

    out = tmp_path / "model"
    out.mkdir()
    for name in ("model.json", "model.safetensors", "train.json"):
        assert name in TRAIN_FILES
        (out / name).write_text("{}")
    with pytest.raises(ConfigError) as info:
        check_output_dir(out, force=True, owned=ATTACK_FILES)
    message = str(info.value)
    assert "holds files this command does not write (model.json, model.safetensors" in message
    assert "--force replaces only an earlier result of this command" in message


def test_force_replaces_every_earlier_result(scanned):
    """No stale file of the earlier run survives beside the new results."""
    data, out = scanned
    (out / "lgm-model").mkdir()  # written by an earlier scan with lgm-likelihood
    (out / "lgm-model" / "model.json").write_text("{}")
    result = scan(data, out, "--force", "-q")
    assert result.exit_code == 0, result.output
    assert not (out / "lgm-model").exists() and (out / "scores.csv").is_file()
    assert leftovers(out.parent) == []


def test_a_failed_first_run_leaves_no_folder(tmp_path, monkeypatch):
    """Neither --out nor the parent folders made for it survive a failure or Ctrl-C."""
    data = save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "data.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not an npz")
    result = scan(bad, tmp_path / "a" / "out")
    assert result.exit_code == 2

    def broken(*args, **kwargs):
        raise DataError("the data went bad halfway")

    monkeypatch.setattr(poisonlab.workflows.scan, "scan", broken)
    assert scan(data, tmp_path / "a" / "b" / "out").exit_code == 2

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(poisonlab.workflows.scan, "scan", interrupt)
    result = scan(data, tmp_path / "a" / "out")
    assert result.exit_code == 130 and "nothing was written to" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "data.npz"]


TERMINATED_SCAN = """
import os, signal, sys, time
import poisonlab.workflows.scan
from poisonlab.cli.main import main

def terminated(*args, **kwargs):  # the scan is stopped by kill or a CI timeout while it runs
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # (the signal arrives first)

poisonlab.workflows.scan.scan = terminated
sys.argv = ["poisonlab", "scan", sys.argv[1], "-D", "raw-clustering", "-o", sys.argv[2]]
main()
"""


def test_sigterm_leaves_no_folder_as_ctrl_c_does_and_exits_143(tmp_path):
    """SIGTERM killed a command mid-way: its hidden .partial folder and the parent folders made
    for --out stayed behind."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "data.npz")
    out = tmp_path / "a" / "out"
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", TERMINATED_SCAN, str(data), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 143, (done.returncode, done.stderr)  # 128 + SIGTERM; Ctrl-C is 130
    assert "interrupted: nothing was written to" in " ".join(done.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]


def test_attack_and_train_write_only_what_force_may_replace(tmp_path):
    attack = tmp_path / "attack"
    args = ["attack", "badnets", "--limit", "200", "--victim-epochs", "1", "-o", str(attack)]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in attack.iterdir()} <= set(ATTACK_FILES)
    assert (attack / "victim").is_dir()
    (attack / "notes.txt").write_text("mine")
    refused = runner.invoke(app, [*args, "--force", "-q"])
    assert refused.exit_code == 2 and "notes.txt" in refused.output
    train = tmp_path / "train"
    args = ["train", "--limit", "200", "--epochs", "1", "-o", str(train), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p.name for p in train.iterdir()} == set(TRAIN_FILES)
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_output_folder_swaps_only_on_success(tmp_path):
    target = tmp_path / "out"
    with output_folder(target, force=False, owned=("a.txt",)) as folder:
        (folder.work / "a.txt").write_text("1")
        assert not target.exists() and folder.work.parent == tmp_path
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), output_folder(target, force=True, owned=("a.txt",)) as f:
        (f.work / "a.txt").write_text("2")
        raise RuntimeError
    assert (target / "a.txt").read_text() == "1"
    refused = pytest.raises(ConfigError, match="already exists; pass --force")
    with refused, output_folder(target, force=False, owned=("a.txt",)):
        pass
    with output_folder(target, force=True, owned=("a.txt",)) as folder:
        (folder.work / "a.txt").write_text("3")
    assert (target / "a.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_linked_or_file_output_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    for name, message in (("link", "is a symbolic link"), ("file", "is not a folder")):
        with (
            pytest.raises(ConfigError, match=message),
            output_folder(tmp_path / name, force=True, owned=()),
        ):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link", "real"]


def test_a_file_added_while_the_command_ran_is_not_deleted(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old")
    refused = pytest.raises(ConfigError, match=r"\(b.txt\); .* the new results are in ")
    with refused, output_folder(target, force=True, owned=("a.txt",)) as folder:
        (folder.work / "a.txt").write_text("new")
        (target / "b.txt").write_text("the user's")
    assert (target / "a.txt").read_text() == "old" and (target / "b.txt").exists()
    assert (folder.work / "a.txt").read_text() == "new"  # nothing computed is lost either


def test_ground_truth_that_fails_after_the_scan_leaves_no_folder(tmp_path, monkeypatch):
    """The data's ``is_poison`` is read before the output folder is swapped in: when reading it
    fails (here: it no longer matches the scanned samples), no partial --out is left behind."""
    import poisonlab.reports.scan_report

    data = save_npz(blobs_dataset(n_per_class=20, seed=0), tmp_path / "data.npz")

    def mismatched(source, ids):
        raise DataError(f"{source}: its samples are not the ones scanned")

    monkeypatch.setattr(poisonlab.reports.scan_report, "ground_truth", mismatched)
    result = scan(data, tmp_path / "out")
    assert result.exit_code == 2 and "not the ones scanned" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
