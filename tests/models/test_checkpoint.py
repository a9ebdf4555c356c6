"""Checkpoints round-trip exactly and refuse anything that does not match."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from poisonlab.errors import CheckpointError
from poisonlab.models import ModelConfig, build_model, load_checkpoint, save_checkpoint


@pytest.fixture
def saved(tmp_path):
    model = build_model(ModelConfig("lgm-net", 1, 8, 8, 10, head="lgm"), seed=1)
    save_checkpoint(model, tmp_path / "ckpt", test_accuracy=0.5)
    return model, tmp_path / "ckpt"


def test_round_trip_is_exact(saved) -> None:
    model, path = saved
    loaded = load_checkpoint(path)
    assert loaded.extra == {"test_accuracy": 0.5}
    assert loaded.model.config == model.config
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    model.eval()
    assert torch.equal(loaded.model(x), model(x))
    assert load_checkpoint(path / "model.safetensors").model.config == model.config


def test_expectation_mismatch_is_refused(saved) -> None:
    _, path = saved
    with pytest.raises(CheckpointError, match="in_channels: checkpoint has 1, expected 3"):
        load_checkpoint(path, expect={"in_channels": 3})


def test_weights_of_another_architecture_are_refused(saved, tmp_path) -> None:
    _, path = saved
    other = build_model(ModelConfig("cnn-small", 1, 8, 8, 10))
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()}, path / "model.safetensors"
    )
    with pytest.raises(CheckpointError, match="do not match architecture 'lgm-net'"):
        load_checkpoint(path)


def test_shape_mismatch_names_the_tensor(saved) -> None:
    _, path = saved
    meta = json.loads((path / "model.json").read_text())
    meta["model"]["num_classes"] = 7
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"head.means has shape \(10, 2\)"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: (p / "model.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "model.json").write_text('{"format": "x"}'), "not a poisonlab checkpoint"),
        (lambda p: (p / "model.safetensors").write_bytes(b"\x00" * 20), "unreadable safetensors"),
        (lambda p: (p / "model.json").unlink(), "missing model.json"),
    ],
)
def test_corrupt_files_are_refused(saved, mutate, message) -> None:
    _, path = saved
    mutate(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_path(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_another_file_is_refused_by_its_own_name(saved) -> None:
    """Issue: `scan --model data.npz` said "checkpoint .: missing model.safetensors", naming the
    file's folder instead of the file given; a file inside the checkpoint folder still loads."""
    _, path = saved
    other = path / "data.npz"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointError, match=r"data\.npz is a file; expected the folder"):
        load_checkpoint(other)
    assert load_checkpoint(path / "model.json").path == path


@pytest.mark.parametrize("value", [0, None])
def test_a_path_that_is_not_text_is_refused_by_name(value) -> None:
    """Issue: load_checkpoint(0) raised pathlib's raw TypeError."""
    with pytest.raises(CheckpointError, match="checkpoint must be a folder path"):
        load_checkpoint(value)
