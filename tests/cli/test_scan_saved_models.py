"""Scanning again with the models an earlier scan saved: `--model OUT/model` also reads the
OUT/lgm-model beside it for lgm-likelihood (or `--lgm-model DIR`), and nothing is trained."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app
from poisonlab.data import save_npz
from poisonlab.models import ModelConfig, build_model, save_checkpoint
from poisonlab.workflows import scan as scan_module
from tests.conftest import blobs_dataset

runner = CliRunner()
DEFENSES = "lgm-likelihood,spectral-signatures"


def run(*args: object):
    return runner.invoke(app, ["scan", *map(str, args)])


@pytest.fixture
def first(tmp_path):
    """data.npz (120 blobs, 3 classes) and a scan of it that trained and saved both models."""
    data = save_npz(blobs_dataset(n_per_class=40, seed=0), tmp_path / "data.npz")
    result = run(data, "-D", DEFENSES, "--epochs", "1", "-o", tmp_path / "first", "-q")
    assert result.exit_code == 0, result.output
    return data, tmp_path / "first"


def forbid_training(monkeypatch) -> None:
    """Any model training in the scan (in this process or a child) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the scan trained a model")

    monkeypatch.setattr(scan_module, "train_default_model", refuse)
    monkeypatch.setattr(scan_module, "BackgroundTraining", refuse)


def column(folder, name: str) -> list[str]:
    with (folder / "scores.csv").open() as handle:
        return [row[name] for row in csv.DictReader(handle)]


def test_rescan_with_the_saved_model_reads_the_lgm_model_beside_it(first, monkeypatch):
    data, scanned = first
    forbid_training(monkeypatch)
    again = scanned.parent / "again"
    result = run(data, "-D", DEFENSES, "--model", scanned / "model", "-o", again)
    assert result.exit_code == 0, result.output
    found = scanned / "lgm-model"
    assert f"lgm-likelihood reads the LGM model found beside --model: {found}" in (
        result.output.splitlines()
    )
    summary = json.loads((again / "summary.json").read_text())
    lgm = summary["defenses"]["lgm-likelihood"]
    assert lgm["status"] == "ran" and lgm["model"] == "lgm-model"
    models = {m["role"]: m for m in summary["models"]}
    assert models["lgm-model"] == {
        "role": "lgm-model",
        "source": "checkpoint",
        "arch": "lgm-net",
        "head": "lgm",
        "path": str(found),
        "training": None,
        "note": f"found beside --model {scanned / 'model'}",
    }
    assert models["model"]["source"] == "checkpoint" and models["model"]["training"] is None
    for name in ("lgm-likelihood_score", "spectral-signatures_score"):
        assert column(again, name) == column(scanned, name)  # the same models: the same scores
    assert not (again / "model").exists() and not (again / "lgm-model").exists()  # not copied


def test_lgm_model_option_serves_lgm_likelihood_alone(first, monkeypatch):
    data, scanned = first
    forbid_training(monkeypatch)
    again = scanned.parent / "again"
    given = scanned / "lgm-model"
    result = run(data, "-D", "lgm-likelihood", "--lgm-model", given, "-o", again, "-q")
    assert result.exit_code == 0, result.output
    models = json.loads((again / "summary.json").read_text())["models"]
    assert [(m["role"], m["source"], m["path"], m["note"]) for m in models] == [
        ("lgm-model", "checkpoint", str(given), None)
    ]
    name = "lgm-likelihood_score"
    assert column(again, name) == column(scanned, name)


@pytest.fixture
def files(tmp_path):
    """data.npz (3 classes of 8×8 images) and untrained checkpoints that do not serve as its LGM
    model, plus an earlier scan's folder whose lgm-model/ has 4 classes."""
    data = save_npz(blobs_dataset(n_per_class=10, seed=0), tmp_path / "data.npz")

    def saved(arch: str, where: str, *, head: str = "lgm", size: int = 8, classes: int = 3):
        config = ModelConfig(arch, 1, size, size, classes, head=head)
        return save_checkpoint(build_model(config, seed=0), tmp_path / where)

    (tmp_path / "not-a-model").mkdir()
    return {
        "data": data,
        "tmp": tmp_path,
        "softmax": saved("cnn-small", "softmax", head="softmax"),
        "classes": saved("lgm-net", "four-classes", classes=4),
        "shape": saved("lgm-net", "ten-pixels", size=10),
        "folder": tmp_path / "not-a-model",
        "scan": saved("cnn-small", "scan/model", head="softmax").parent,
        "scan-lgm": saved("lgm-net", "scan/lgm-model", classes=4),
    }


def test_an_lgm_model_that_does_not_fit_is_refused_in_one_line(files):
    cases = [
        (
            ["--lgm-model", files["softmax"]],
            f"--lgm-model {files['softmax']} is a cnn-small with a softmax head; expected a model "
            "trained with the LGM loss (the lgm-model folder a scan writes, or poisonlab train "
            "--loss lgm)",
        ),
        (
            ["--lgm-model", files["classes"]],
            f"--lgm-model {files['classes']} does not fit data set 'data': num_classes 4 (data: 3)",
        ),
        (
            ["--lgm-model", files["shape"]],
            f"--lgm-model {files['shape']} does not fit data set 'data': height 10 (data: 8), "
            "width 10 (data: 8)",
        ),
        (
            ["--lgm-model", files["folder"]],
            f"--lgm-model: checkpoint {files['folder']}: missing model.safetensors",
        ),
        (
            ["--model", files["scan"] / "model"],
            f"the LGM model {files['scan-lgm']} does not fit data set 'data': num_classes 4 "
            f"(data: 3) (found beside --model {files['scan'] / 'model'}; --lgm-model chooses "
            "another)",
        ),
    ]
    out = files["tmp"] / "out"
    for extra, message in cases:
        result = run(files["data"], "-D", DEFENSES, *extra, "-o", out)
        assert result.exit_code == 2, (extra, result.output)
        assert f"error: {message}" in result.output.splitlines(), result.output
        assert "Traceback" not in result.output and not out.exists()


def test_an_output_folder_over_the_lgm_model_beside_model_is_refused(files):
    target = files["scan"] / "lgm-model"
    result = run(files["data"], "-D", DEFENSES, "-m", files["scan"] / "model", "-o", target)
    assert result.exit_code == 2
    assert f"--out {target} overlaps the input {target.resolve()}" in result.output
    assert (target / "model.safetensors").exists()


def test_an_lgm_model_given_as_model_beside_a_softmax_model_gets_one_warning(files):
    """--model OUT/lgm-model (every defense then reads the LGM network) is most likely a slip
    for OUT/model: one WARNING names both folders; an LGM model with no softmax model beside
    it, or beside another LGM model, gets none."""
    tmp = files["tmp"]

    def saved(where: str, *, head: str = "lgm") -> Path:
        arch = "lgm-net" if head == "lgm" else "cnn-small"
        config = ModelConfig(arch, 1, 8, 8, 3, head=head)
        return save_checkpoint(build_model(config, seed=0), tmp / where)

    def warnings(model: Path) -> list[str]:
        out = tmp / "out"
        result = run(files["data"], "-D", "spectral-signatures", "-m", model, "-o", out, "-q")
        assert result.exit_code == 0, result.output
        shutil.rmtree(out)
        return [line for line in result.output.splitlines() if line.startswith("WARNING")]

    lgm, softmax = saved("earlier/lgm-model"), saved("earlier/model", head="softmax")
    assert warnings(lgm) == [
        f"WARNING  --model {lgm} is an LGM model: every defense reads it, so scores differ from "
        f"a scan with the softmax model {softmax} beside it. --model names the model the defenses "
        "read (an earlier scan's model/); lgm-likelihood's LGM model is --lgm-model, or the "
        "lgm-model/ found beside --model"
    ]
    assert warnings(lgm / "model.json") != []  # a file inside the folder names it too
    assert warnings(saved("alone/lgm-model")) == []
    saved("two/model")
    assert warnings(saved("two/lgm-model")) == []
    assert warnings(softmax) == []  # the softmax model itself, as meant


def test_the_folder_beside_a_model_given_as_dot_is_the_one_above_it(tmp_path, monkeypatch):
    """`--model .` from inside OUT/model: Path('.').parent is '.' itself, so the lgm-model
    folder beside it was looked for inside the model folder, not found, and trained again."""
    from poisonlab.cli.scan_cmd import folder_beside

    (tmp_path / "out" / "model" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "lgm-model").mkdir()
    monkeypatch.chdir(tmp_path / "out" / "model")
    found = (tmp_path / "out" / "lgm-model").resolve()
    assert folder_beside(Path("."), "lgm-model") == found
    monkeypatch.chdir(tmp_path / "out" / "model" / "sub")
    assert folder_beside(Path(".."), "lgm-model") == found
    assert folder_beside(Path("../../model"), "lgm-model") == Path("../../lgm-model")
