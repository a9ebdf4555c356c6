"""borrowed(): eval mode for a block, each module's own mode (and requires_grad) restored after."""

from __future__ import annotations

import pytest
import torch

from poisonlab.models import ModelConfig, borrowed, build_model, capture_activations
from poisonlab.train import predict_logits
from tests.borrowing import mixed_modes


def _model() -> torch.nn.Module:
    return build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=16), seed=0)


def _modes(model: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_mixed_modes_come_back_per_module_even_on_error() -> None:
    model = mixed_modes(_model())
    before = _modes(model)
    with borrowed(model) as inside:
        assert inside is model and not any(_modes(model).values())
    assert _modes(model) == before
    with pytest.raises(RuntimeError, match="boom"), borrowed(model, freeze=True):
        raise RuntimeError("boom")
    assert _modes(model) == before


def test_freeze_restores_each_flag() -> None:
    model = _model()
    first = next(model.parameters())
    first.requires_grad_(False)
    wanted = [p.requires_grad for p in model.parameters()]
    with borrowed(model, freeze=True):
        assert not any(p.requires_grad for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == wanted
    with borrowed(model):  # without freeze the flags are not touched
        assert [p.requires_grad for p in model.parameters()] == wanted


def test_inference_helpers_restore_mixed_modes() -> None:
    """The issue's probe: train mode with body.conv1 in eval mode must come back that way."""
    model = _model().train()
    model.body.conv1.eval()
    before = _modes(model)
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    logits = predict_logits(model, images)
    assert _modes(model) == before
    capture_activations(model, images, ["body.relu1"])
    assert _modes(model) == before
    with torch.no_grad():
        assert torch.equal(logits, model.eval()(images))  # inference ran in eval mode
