"""Start-up: help, version and argument errors answer without importing torch.

The command line's help texts and early checks read poisonlab.cli.catalog instead of the
registries (which import torch); these tests check the catalog against the registries and that
no such answer loads torch. How fast they answer is measured in bench/bench_startup.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poisonlab import runtime
from poisonlab.cli import catalog

# Runs the CLI entry point once per argument list in one process, then reports whether torch
# (or torchvision, matplotlib) was imported and each run's exit status.
DRIVER = """
import contextlib, io, json, sys
from poisonlab.cli.main import main
results = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["poisonlab", *args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    results.append({"args": args, "code": code, "out": out.getvalue(), "err": err.getvalue()})
heavy = sorted(m for m in ("torch", "torchvision", "matplotlib", "sklearn", "numba") if m in sys.modules)
print(json.dumps({"results": results, "heavy": heavy}))
"""


_SOURCE = os.pathsep.join(
    [str(Path(runtime.__file__).resolve().parents[1])]
    + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)


def run_cli(cases: list[list[str]], tmp_path) -> tuple[list[dict], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        # no wrapped messages; the child imports the poisonlab this process imported (a relative
        # PYTHONPATH would resolve against tmp_path and fall back to the installed copy)
        env=os.environ | {"COLUMNS": "300", "PYTHONPATH": _SOURCE},
        timeout=120,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["results"], report["heavy"]


COMMANDS = ["attack", "data", "demo", "report", "run", "scan", "table", "train"]


def test_help_and_version_load_no_torch(tmp_path):
    cases = [["--help"], ["--version"]] + [[c, "--help"] for c in COMMANDS]
    cases.append(["data", "info", "--help"])
    results, heavy = run_cli(cases, tmp_path)
    assert heavy == []
    assert all(r["code"] == 0 for r in results), results
    assert all(c in results[0]["out"] for c in COMMANDS)  # every command listed
    assert results[1]["out"].strip() == "poisonlab 0.1.0"
    scan_help = results[2 + COMMANDS.index("scan")]["out"]
    assert "spectral-signatures" in scan_help and "--threads" in scan_help


def test_argument_and_file_errors_load_no_torch(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.txt").write_text("keep me")
    cases = [
        ["scan", "missing.npz", "-D", "all", "-o", "out"],
        ["scan", "digits", "-D", "nope", "-o", "out"],
        ["scan", "digits", "-D", "all", "-o", "out", "--threads", "0"],
        ["scan", "digits", "-D", "all", "-o", "out", "--threads", "-2"],
        ["scan", "digits", "-D", "all", "-o", "taken"],
        ["scan", "digits", "-D", "all", "-o", "out", "--model", "no-model"],
        ["scan", "digits", "-D", "all"],  # typer: missing --out
        ["train", "-o", "out", "--model", "nope"],
        ["train", "-o", "out", "--data", "mnist:nowhere"],
        ["attack", "nope", "-o", "out"],
        ["attack", "badnets", "-o", "out", "--data", "nowhere.npz"],
        ["run", "missing.toml"],
        ["data", "info", "nowhere"],
        ["demo", "--threads", "zero"],
        ["scan", "missing.npz", "-o", "out"],  # no --defense: the default, so the file is checked
    ]
    results, heavy = run_cli(cases, tmp_path)
    assert heavy == []
    for r in results:
        assert r["code"] == 2, r
    messages = [r["err"] for r in results]
    assert "missing.npz: no such file or directory" in messages[0]
    assert "unknown defense 'nope'" in messages[1]
    assert "--threads 0: expected a whole number of threads from 1 to" in messages[2]
    assert "--threads -2: expected" in messages[3]
    assert "already exists; pass --force" in messages[4]
    assert "--model no-model: no such file or directory" in messages[5]
    assert "--out" in messages[6]
    assert "unknown model 'nope'" in messages[7]
    assert "nowhere: no such file or directory" in messages[8]
    assert "unknown attack 'nope'" in messages[9]
    assert "nowhere.npz: no such file or directory" in messages[10]
    assert "config file missing.toml not found" in messages[11]
    assert "nowhere: no such file or directory" in messages[12]
    assert "Invalid value for '--threads'" in messages[13]
    assert "missing.npz: no such file or directory" in messages[14]
    assert (tmp_path / "taken" / "old.txt").read_text() == "keep me"  # refused, not replaced
    assert not (tmp_path / "out").exists()


def test_device_architecture_and_epoch_errors_load_no_torch(tmp_path):
    """Issue: an unknown --device or scan --arch, or --epochs 0, was refused only after torch had
    loaded (3 s on two cores), and scan printed its "skipping deep-features" line first."""
    cases = [
        ["scan", "digits", "-D", "all", "-o", "out", "--arch", "nope"],
        ["scan", "digits", "-D", "all", "-o", "out", "--epochs", "0"],
        ["train", "-o", "out", "--epochs", "0"],
        ["train", "-o", "out", "--device", "gpu"],
        ["scan", "digits", "-D", "all", "-o", "out", "--device", "gpu"],
        ["attack", "badnets", "-o", "out", "--device", "cuda:x"],
        ["demo", "--device", "mps"],
        ["run", "missing.toml", "--device", "gpu"],
    ]
    results, heavy = run_cli(cases, tmp_path)
    assert heavy == []
    messages = [r["err"].strip() for r in results]
    assert all(r["code"] == 2 for r in results), results
    assert all(m.startswith("error:") and "\n" not in m for m in messages), messages
    assert "unknown model 'nope'" in messages[0]
    assert "--epochs 0: expected a whole number of epochs >= 1" in messages[1]
    assert "--epochs 0: expected" in messages[2]
    assert all("unknown device" in m for m in messages[3:]), messages
    assert not (tmp_path / "out").exists()


def test_bad_image_sizes_load_no_torch(tmp_path):
    """--image-size's value is checked with the other arguments (its format, not the data's:
    whether DATA is an image folder is read once the loaders are imported)."""
    cases = [
        ["scan", "digits", "-o", "out", "--image-size", "0x5"],
        ["train", "-o", "out", "--image-size", "abc"],
        ["data", "info", "digits", "--image-size", "-3"],
        ["attack", "badnets", "-o", "out", "--image-size", "8x"],
    ]
    results, heavy = run_cli(cases, tmp_path)
    assert heavy == []
    messages = [r["err"].strip() for r in results]
    assert all(r["code"] == 2 for r in results), results
    assert all(m.startswith("error:") and "\n" not in m for m in messages), messages
    for case, message in zip(cases, messages, strict=True):
        assert f"--image-size {case[-1]!r}: expected HEIGHTxWIDTH in whole pixels >= 1" in message
    assert not (tmp_path / "out").exists()


def test_too_many_threads_is_clamped_with_a_warning(tmp_path):
    cores = runtime.cpu_count()
    cases = [["scan", "missing.npz", "-D", "all", "-o", "out", "--threads", str(cores + 3)]]
    results, heavy = run_cli(cases, tmp_path)
    assert heavy == []
    assert f"--threads {cores + 3} is more than this machine's {cores} cores" in results[0]["err"]
    assert "missing.npz: no such file or directory" in results[0]["err"]  # then carries on


def test_catalog_matches_the_registries():
    from poisonlab.attacks import attack_names
    from poisonlab.data.loaders import DATA_SOURCES
    from poisonlab.defenses import detector_names
    from poisonlab.models import model_names
    from poisonlab.workflows.attack_run import PROTOCOLS

    assert list(catalog.DEFENSES) == detector_names()
    assert list(catalog.ATTACKS) == attack_names()
    assert list(catalog.MODELS) == model_names()
    assert tuple(catalog.PROTOCOLS) == tuple(PROTOCOLS)
    registered = {n: (DATA_SOURCES.get(n).summary, DATA_SOURCES.get(n).path) for n in DATA_SOURCES}
    assert registered == catalog.DATA_SOURCES


@pytest.mark.parametrize("name", sorted(runtime.BUILTIN_SHAPES))
def test_builtin_shapes_match_the_data(name):
    from poisonlab.data import load_dataset
    from poisonlab.errors import DataError

    try:
        data = load_dataset(name)
    except DataError as exc:  # Fashion-MNIST is an optional system package
        pytest.skip(str(exc))
    assert tuple(data.shape) == runtime.builtin_image_shape(name)
