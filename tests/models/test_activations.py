"""Reading activations by name leaves the model exactly as it was."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model, capture_activations, recording


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    """Seeded uniform images: the same input on every run, whatever ran before."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_capture_matches_manual_forward_and_removes_hooks() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _images(10, 1, 8, 8)
    acts = capture_activations(model, x, ["body.relu1", "body"], batch_size=4, pool=False)
    assert _hook_count(model) == 0
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    model.eval()
    # Batches of 4 against one batch of 10: float32 kernels may sum in another order for another
    # batch size or CPU (other kernels differ here by up to 1e-7 on activations of size ~0.2,
    # 5e-5 relative on the smallest), so allclose's default atol=1e-8 can fail; a wrong layer or
    # batch would be off by ~0.1.
    tolerance = {"rtol": 1e-4, "atol": 1e-5}
    with torch.no_grad():
        assert torch.allclose(acts["body"], model.features(x), **tolerance)
        expected = model.body.relu1(model.body.conv1(x)).flatten(1)
        assert torch.allclose(acts["body.relu1"], expected, **tolerance)


def test_hooks_are_removed_when_the_forward_pass_fails() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    with pytest.raises(RuntimeError), recording(model, ["body.conv1"]):
        model(_images(2, 3, 8, 8))  # wrong channel count
    assert _hook_count(model) == 0


def test_unknown_layer_names_are_refused() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    with pytest.raises(ConfigError, match=r"unknown layer 'body\.conv9'"):
        capture_activations(model, _images(2, 1, 8, 8), ["body.conv9"])
    assert _hook_count(model) == 0


def test_pooling_averages_conv_maps() -> None:
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10), seed=0)
    x = _images(4, 1, 8, 8)
    pooled = capture_activations(model, x, ["body.relu2"])["body.relu2"]
    full = capture_activations(model, x, ["body.relu2"], pool=False)["body.relu2"]
    # the same maps averaged by two reductions: float32 rounding only
    assert torch.allclose(pooled, full.view(4, 64, -1).mean(-1), rtol=1e-5, atol=1e-6)


def test_cpu_pass_runs_in_slices_of_cpu_rows_with_the_same_outputs() -> None:
    """On the CPU at most CPU_ROWS images go through the model at a time (faster: the slice's
    activations stay in cache); the rows come out as one batch of 150 would give them."""
    from poisonlab.models.activations import CPU_ROWS, capture_representations

    model = build_model(ModelConfig("cnn-small", 1, 12, 12, 10), seed=0).eval()
    x = _images(150, 1, 12, 12)
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(len(args[0])))
    try:
        outputs, logits = capture_representations(
            model, x, [("body.relu3", False), ("body.relu2", True)], batch_size=256
        )
    finally:
        handle.remove()
    assert sizes == [CPU_ROWS, CPU_ROWS, 150 - 2 * CPU_ROWS]
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outputs[("body.relu3", False)], model.features(x))
    assert outputs[("body.relu2", True)].shape == (150, 64)
