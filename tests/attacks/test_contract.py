"""The borrowing contract, checked for EVERY registered attack: a given model comes back exactly as
it was (weights, every module's own train/eval mode, requires_grad, hooks, no in-place move), and
the caller's global random state is untouched (an attack draws from the generator it is given;
a surrogate it trains seeds its own dropout inside a forked RNG).

A newly registered attack joins automatically with its defaults; ``FAST`` holds small settings
for the slow ones.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from poisonlab.attacks import ATTACKS, attack_names, build_attack
from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from tests.borrowing import (
    assert_same_model,
    global_random_state,
    mixed_modes,
    model_snapshot,
    moves_of,
)
from tests.conftest import blobs_dataset

CORNER = {"position": "bottom-right", "offset": 0}  # 8×8 images: no room for default windows
FAST: dict[str, dict[str, Any]] = {
    "badnets": {"rate": 0.1, **CORNER},
    "label-consistent": {"count": 4, "surrogate_epochs": 1, "steps": 2, **CORNER},
    "feature-collision": {
        "num_targets": 2,
        "bases_per_target": 1,
        "max_iter": 5,
        "beta_scaling": "none",
        "pixel_scale": 1.0,
    },
}
NAMES = attack_names()


def run(name: str, model: torch.nn.Module | None) -> None:
    data, test = blobs_dataset(n_per_class=10), blobs_dataset(n_per_class=4, seed=1)
    attack = build_attack(name, **FAST.get(name, {}))
    attack.poison(data, generator=make_generator(0), model=model, test=test)


def tiny_model() -> torch.nn.Module:
    return build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=16), seed=0)


@pytest.mark.parametrize("name", NAMES)
def test_a_borrowed_model_comes_back_exactly(name: str) -> None:
    model = mixed_modes(tiny_model())
    for p in list(model.parameters())[:2]:
        p.requires_grad_(False)  # a partly frozen model (e.g. transfer learning)
    before = model_snapshot(model)
    with moves_of(model) as moves:
        run(name, model)
    assert moves == [], f"the caller's model was moved in place ({moves[0]})"
    assert_same_model(before, model_snapshot(model))
    assert not torch.nn.modules.module._global_forward_hooks


@pytest.mark.parametrize("name", NAMES)
def test_caller_random_state_untouched(name: str) -> None:
    """With a model and, when the attack can train its own surrogate, without one."""
    model_options = [tiny_model()] + ([] if ATTACKS.get(name).needs_model else [None])
    for model in model_options:
        with torch.random.fork_rng():
            torch.manual_seed(777)
            before = global_random_state()
            run(name, model)
            assert global_random_state() == before, f"model={'given' if model else 'none'}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("generator", 0, "generator must be a torch.Generator"),
        ("generator", None, "generator must be a torch.Generator"),
        ("train", "digits", "train must be an ImageDataset"),
        ("train", torch.zeros(4, 1, 8, 8), "train must be an ImageDataset"),
        ("test", "digits", "test must be an ImageDataset"),
    ],
)
def test_wrong_typed_arguments_are_refused_by_name(name, argument, value, expected) -> None:
    """Issue: poison(..., generator=0) raised torch's raw TypeError from randperm, and a path or a
    tensor where the data goes an AttributeError; every attack names the argument instead."""
    data, test = blobs_dataset(n_per_class=10), blobs_dataset(n_per_class=4, seed=1)
    arguments: dict[str, Any] = {"train": data, "generator": make_generator(0), "test": test}
    arguments[argument] = value
    attack = build_attack(name, **FAST.get(name, {}))
    with pytest.raises(ConfigError, match=f"^{name} {expected}"):
        attack.poison(arguments.pop("train"), model=tiny_model(), **arguments)
