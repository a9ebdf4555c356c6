"""Reading activations by name leaves the model exactly as it was."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model, capture_activations, recording


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_capture_matches_manual_forward_and_removes_hooks() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(10, 1, 8, 8)
    acts = capture_activations(model, x, ["body.relu1", "body"], batch_size=4, pool=False)
    assert _hook_count(model) == 0
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(acts["body"], model.features(x))
        assert torch.allclose(acts["body.relu1"], model.body.relu1(model.body.conv1(x)).flatten(1))


def test_hooks_are_removed_when_the_forward_pass_fails() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    with pytest.raises(RuntimeError), recording(model, ["body.conv1"]):
        model(torch.rand(2, 3, 8, 8))  # wrong channel count
    assert _hook_count(model) == 0


def test_unknown_layer_names_are_refused() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    with pytest.raises(ConfigError, match=r"unknown layer 'body\.conv9'"):
        capture_activations(model, torch.rand(2, 1, 8, 8), ["body.conv9"])
    assert _hook_count(model) == 0


def test_pooling_averages_conv_maps() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    x = torch.rand(4, 1, 8, 8)
    pooled = capture_activations(model, x, ["body.relu2"])["body.relu2"]
    full = capture_activations(model, x, ["body.relu2"], pool=False)["body.relu2"]
    assert torch.allclose(pooled, full.view(4, 64, -1).mean(-1))
