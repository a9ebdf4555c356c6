"""Checks that code borrowing a caller's model leaves it, and the caller's random state, alone.

Shared by the detector contract (tests/defenses/test_contract.py) and the attack contract
(tests/attacks/test_contract.py):

- :func:`model_snapshot` / :func:`assert_same_model`: weights, buffers, every module's own
  train/eval flag, ``requires_grad``, ``.grad``, hooks, devices and the module tree;
- :func:`mixed_modes`: a model in train mode with some submodules in eval mode, the state that
  ``model.eval(); ...; model.train(was_training)`` gets wrong;
- :func:`moves_of`: records every in-place ``.to()`` / ``.cuda()`` / ``.float()`` on the model or
  one of its submodules (all go through ``nn.Module._apply``). A CPU-only machine cannot see a
  model change device, but it can see the call that would move it on a CUDA machine;
- :func:`global_random_state` : torch's, NumPy's and Python's global RNG states, to compare.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def model_snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a borrower could change on a model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "hooks": [len(getattr(m, d, {})) for m in model.modules() for d in HOOK_DICTS],
        "devices": {p.device for p in model.parameters()},
        "dtypes": {p.dtype for p in model.parameters()},
        "modules": [name for name, _ in model.named_modules()],
    }


def assert_same_model(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Fail naming the first thing that differs between two :func:`model_snapshot`."""
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), f"{key} changed"
    for field in ("training", "requires_grad", "grads", "hooks", "devices", "dtypes", "modules"):
        assert before[field] == after[field], f"model {field} changed"


def mixed_modes(model: nn.Module) -> nn.Module:
    """Train mode with every other module that has children (and the first leaf) in eval mode."""
    model.train()
    modules = [m for name, m in model.named_modules() if name]
    for i, module in enumerate(modules):
        if i == 0 or (i % 2 == 0 and not list(module.children())):
            module.eval()
    flags = {m.training for m in model.modules()}
    assert flags == {True, False}, "the probe needs both modes"
    return model


@contextmanager
def moves_of(model: nn.Module) -> Iterator[list[str]]:
    """Within the block, the class names of the model's modules that were ``_apply``-ed in place."""
    watched = {id(m) for m in model.modules()}
    calls: list[str] = []
    original = nn.Module._apply

    def spy(self: nn.Module, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if id(self) in watched:
            calls.append(type(self).__name__)
        return original(self, fn, *args, **kwargs)

    nn.Module._apply = spy  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        nn.Module._apply = original  # type: ignore[method-assign]


def global_random_state() -> tuple[Any, ...]:
    """The global RNG states of torch (CPU and CUDA), NumPy and Python, comparable with ``==``."""
    cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    numpy_state = np.random.get_state()
    return (
        torch.get_rng_state().tolist(),
        cuda,
        (numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]),
        random.getstate(),
    )
