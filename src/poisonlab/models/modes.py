"""Run a borrowed model in eval mode without changing it: every module's own mode comes back.

``model.eval()`` followed by ``model.train(was_training)`` is not a restore: it sets every
submodule to the top module's mode, so a model in train mode with one BatchNorm layer frozen in
eval mode (a common fine-tuning set-up) comes back with that layer in train mode. A library that
reads a caller's model must hand it back exactly as it got it (scikit-learn's rule for
estimators it is given); :func:`eval_mode` records each module's flag and restores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration of the block; each module's train/eval flag restored after,
    even on error."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training
