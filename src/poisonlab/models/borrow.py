"""Borrowing a caller's model for inference: the one way poisonlab flips train/eval modes.

Detectors, attacks and metrics run models they do not own. ``model.eval()`` followed by
``model.train(was_training)`` is not a restore: it sets every submodule to the top-level flag, so
a model in train mode with one frozen BatchNorm in eval mode comes back with that layer training.
:func:`borrowed` records each module's own flag (and, with ``freeze``, each parameter's
``requires_grad``) and puts exactly those back on exit, even on error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["borrowed"]


@contextmanager
def borrowed(model: nn.Module, *, freeze: bool = False) -> Iterator[nn.Module]:
    """Eval mode for the duration of the block; every module's own mode restored afterwards.

    Parameters
    ----------
    model : nn.Module
        The caller's model; its weights, device and hooks are not touched here.
    freeze : bool
        Also set ``requires_grad=False`` on every parameter for the duration (gradients then flow
        to the inputs only and nothing is written to ``.grad``); each flag is restored on exit.

    Yields
    ------
    nn.Module
        ``model`` itself, in eval mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()] if freeze else []
    try:
        model.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in flags:
            param.requires_grad_(flag)
