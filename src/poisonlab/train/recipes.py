"""Default training recipes per architecture and head, so `poisonlab train` works without flags.

Measured on this project's 2-core CPU (see bench/bench_training.py): the recipes below reach the
accuracies in README.md; every field can be overridden on the command line or in a config.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from poisonlab.train.config import TrainConfig

_BASE = {
    "cnn-small": TrainConfig(epochs=20, batch_size=64, lr=1e-3, patience=5),
    # seed 000 trains the LGM means with their own (larger) learning rate
    "lgm-net": TrainConfig(epochs=40, batch_size=64, lr=1e-3, head_lr=1e-2, patience=8),
    "resnet20": TrainConfig(epochs=30, batch_size=128, lr=1e-3, patience=6),
    "inception-mini": TrainConfig(epochs=30, batch_size=64, lr=1e-3, patience=6),
}


def default_recipe(arch: str, n_samples: int, **overrides: Any) -> TrainConfig:
    """A sensible TrainConfig for ``arch`` on ``n_samples`` images, with ``overrides`` applied.

    Large data sets (≥ 20,000 images) need fewer passes: epochs are capped at 8 there.
    """
    recipe = _BASE.get(arch, TrainConfig())
    if n_samples >= 20_000:
        recipe = replace(recipe, epochs=min(recipe.epochs, 8), batch_size=128, patience=3)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(recipe, **given)
