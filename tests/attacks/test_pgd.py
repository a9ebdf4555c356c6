"""PGD stays in the ε-ball and [0, 1], raises the loss, and leaves the model as it was."""

from __future__ import annotations

import pytest
import torch

from poisonlab.attacks.pgd import pgd_maximize_loss, project_linf
from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from poisonlab.train import TrainConfig, train_model
from tests.conftest import blobs_dataset


@pytest.fixture(scope="module")
def trained():
    data = blobs_dataset()
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0)
    train_model(model, data, TrainConfig(epochs=2, batch_size=32, val_fraction=0.0, patience=None))
    return model, data


def test_stays_in_the_ball_and_the_pixel_box_and_raises_the_loss(trained) -> None:
    model, data = trained
    eps = 0.05
    result = pgd_maximize_loss(model, data.images, data.labels, eps=eps, steps=5, step_size=0.02)
    delta = result.images - data.images
    assert float(delta.abs().max()) <= eps + 1e-6
    assert float(result.images.min()) >= 0.0 and float(result.images.max()) <= 1.0
    # 5 steps of 0.02 would go to 0.1 without the projection: the ε bound is active
    assert float(delta.abs().max()) >= eps - 1e-6
    assert float(result.loss_after.mean()) > float(result.loss_before.mean())
    assert float((result.loss_after >= result.loss_before - 1e-6).float().mean()) > 0.9
    assert result.images.dtype == data.images.dtype and result.images.shape == data.images.shape


def test_model_is_left_unchanged(trained) -> None:
    model, data = trained
    model.train()
    model.zero_grad(set_to_none=True)  # training left gradients behind
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    pgd_maximize_loss(model, data.images[:10], data.labels[:10], eps=0.1, steps=2, step_size=0.05)
    assert model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_batches_do_not_change_the_result(trained) -> None:
    model, data = trained
    kwargs = {"eps": 0.075, "steps": 5, "step_size": 0.015}
    x, y = data.images[::3], data.labels[::3]
    one = pgd_maximize_loss(model, x, y, batch_size=1000, **kwargs)
    many = pgd_maximize_loss(model, x, y, batch_size=7, **kwargs)
    # summed loss: each image's gradient is its own. The smallest |gradient| is 8e-5 of the largest
    # here (> 2e-6 over 8 seeds), far above float32 rounding (~1e-7), so every sign step agrees
    assert torch.allclose(one.images, many.images, atol=1e-6)


def test_zero_steps_returns_the_images(trained) -> None:
    model, data = trained
    result = pgd_maximize_loss(model, data.images, data.labels, eps=0.1, steps=0, step_size=0.01)
    assert torch.equal(result.images, data.images)
    assert torch.allclose(result.loss_before, result.loss_after)


def test_projection_is_onto_the_intersection_of_both_boxes() -> None:
    origin = torch.tensor([0.02, 0.5, 0.99])
    x = torch.tensor([-1.0, 0.9, 2.0])
    assert torch.allclose(project_linf(x, origin, 0.1), torch.tensor([0.0, 0.6, 1.0]))
    inside = origin + 0.05 * (2 * torch.rand(3, generator=make_generator(0)) - 1)
    assert torch.equal(project_linf(inside.clamp(0, 1), origin, 0.1), inside.clamp(0, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0.0}, r"eps must be a number in \(0, 1\]"),
        ({"eps": 8}, r"eps must be a number in \(0, 1\]"),
        ({"steps": -1}, r"steps must be an integer in \[0, 10000\]"),
        ({"step_size": 0}, r"step_size must be a number in \(0, 1\]"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_parameters_name_the_range(trained, kwargs: dict, message: str) -> None:
    model, data = trained
    params = {"eps": 0.1, "steps": 1, "step_size": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        pgd_maximize_loss(model, data.images[:2], data.labels[:2], **params)
