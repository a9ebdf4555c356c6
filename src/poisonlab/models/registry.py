"""The model registry: architecture name → builder taking a ModelConfig."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from poisonlab.registry import Registry
from poisonlab.validation import SEED, InstanceOf, check_param

if TYPE_CHECKING:
    from poisonlab.models.config import ModelConfig
    from poisonlab.models.network import Network

ModelBuilder = Callable[["ModelConfig"], "Network"]

MODELS: Registry[ModelBuilder] = Registry("model")
register_model = MODELS.register


_CONFIG = "a ModelConfig (e.g. ModelConfig('cnn-small', c, h, w, classes))"


def build_model(config: ModelConfig, *, seed: int | None = None) -> Network:
    """Build the network named by ``config.arch``; with ``seed``, its initial weights are fixed.

    The global torch RNG is left as it was (the seed applies inside a forked RNG state).
    """
    from poisonlab.models.config import ModelConfig

    check_param("build_model", "config", config, [InstanceOf(ModelConfig, _CONFIG)])
    check_param("build_model", "seed", seed, [SEED, None])
    _load_architectures()
    builder = MODELS.get(config.arch)
    if seed is None:
        return builder(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(config)


def _load_architectures() -> None:
    """Import the architecture modules so their decorators fill MODELS."""
    from poisonlab.models import cnn_small, inception_mini, lgm_net, resnet  # noqa: F401
