"""train_model and the ELBO fine-tuning share one mini-batch loop (run_epochs); both give exactly
the weights their former hand-written loops gave for a fixed seed.

The references below are those former loops, kept only here, reduced to what touches the weights.
"""

from __future__ import annotations

import pytest
import torch

from poisonlab.models import ModelConfig, build_model
from poisonlab.models.bayesian import kl_divergence, to_bayesian
from poisonlab.seeding import make_generator, seeded_global_rng
from poisonlab.train import TrainConfig, train_model
from poisonlab.train.elbo import fine_tune_elbo
from tests.conftest import blobs_dataset


def _model(arch: str = "cnn-small", head: str = "softmax"):
    return build_model(ModelConfig(arch, 1, 8, 8, 3, head=head, feature_dim=16), seed=0)


def _reference_train(model, data, config: TrainConfig) -> list[float]:
    """The former train_model without validation: the global RNG seeded, Adam, model.train()."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return _reference_epochs(model, data, config)


def _reference_epochs(model, data, config: TrainConfig) -> list[float]:
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay,
        )  # fmt: skip
    else:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    generator = make_generator(config.seed)
    losses = []
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for first in range(0, len(order), config.batch_size):
            batch = order[first : first + config.batch_size]
            loss, _ = model.loss(data.images[batch], data.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(data))
    model.eval()
    return losses


def _reference_elbo(bnn, data, *, epochs, batch_size, lr, kl_weight, seed) -> list[float]:
    """The former fine_tune_elbo: eval mode throughout, NLL + kl_weight · KL / N per batch."""
    optimizer = torch.optim.Adam(bnn.parameters(), lr=lr)
    generator = make_generator(seed)
    bnn.eval()
    kls = []
    with seeded_global_rng(seed):
        for _ in range(epochs):
            order = torch.randperm(len(data), generator=generator)
            kl_sum = 0.0
            for first in range(0, len(order), batch_size):
                batch = order[first : first + batch_size]
                nll, _ = bnn.loss(data.images[batch], data.labels[batch])
                kl = kl_divergence(bnn) / len(data)
                loss = nll + kl_weight * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                kl_sum += float(kl.detach()) * len(batch)
            kls.append(kl_sum / len(data))
    return kls


@pytest.mark.parametrize(
    ("arch", "head", "optimizer"),
    [
        ("cnn-small", "softmax", {}),
        ("resnet20", "lgm", {}),
        ("cnn-small", "softmax", {"weight_decay": 0.01}),
        ("cnn-small", "softmax", {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5}),
    ],
)
def test_train_model_equals_the_former_loop(arch: str, head: str, optimizer: dict) -> None:
    """Dropout (cnn-small) and BatchNorm statistics (resnet20) included, and the optimizer's
    settings (weight decay, SGD with momentum) as the config gives them."""
    data = blobs_dataset(n_per_class=8)
    config = TrainConfig(
        epochs=2, batch_size=7, val_fraction=0.0, patience=None, seed=4, **optimizer
    )
    ours, reference = _model(arch, head), _model(arch, head)
    result = train_model(ours, data, config, device="cpu")
    losses = _reference_train(reference, data, config)
    for (key, value), other in zip(
        ours.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), key
    assert [r.train_loss for r in result.history] == losses
    assert all(p.grad is None for p in ours.parameters())  # gradients are cleared at the end


@pytest.mark.parametrize("kl_weight", [1.0, 0.0])
def test_elbo_fine_tuning_equals_the_former_loop(kl_weight: float) -> None:
    """resnet20: BatchNorm must keep its running statistics (eval mode) in both."""
    data = blobs_dataset(n_per_class=5)
    model = _model("resnet20")
    ours, reference = to_bayesian(model), to_bayesian(model)
    settings = {"epochs": 2, "batch_size": 4, "lr": 1e-2, "kl_weight": kl_weight, "seed": 3}
    history = fine_tune_elbo(ours, data, **settings)
    kls = _reference_elbo(reference, data, **settings)
    for (key, value), other in zip(
        ours.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(value, other), key
    assert history.kl_per_sample == kls
    assert not ours.training
