"""Networks (cnn-small, lgm-net, resnet20, inception-mini) with softmax or LGM heads."""

from __future__ import annotations

from poisonlab.models.activations import capture_activations, recording, resolve_layers
from poisonlab.models.borrow import borrowed
from poisonlab.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from poisonlab.models.config import ModelConfig
from poisonlab.models.heads import LGMHead, SoftmaxHead
from poisonlab.models.network import FEATURE_LAYER, Network
from poisonlab.models.registry import MODELS, build_model, register_model

__all__ = [
    "FEATURE_LAYER",
    "MODELS",
    "Checkpoint",
    "LGMHead",
    "ModelConfig",
    "Network",
    "SoftmaxHead",
    "borrowed",
    "build_model",
    "capture_activations",
    "load_checkpoint",
    "model_names",
    "recording",
    "register_model",
    "resolve_layers",
    "save_checkpoint",
]


def model_names() -> list[str]:
    """Registered architecture names."""
    from poisonlab.models.registry import _load_architectures

    _load_architectures()
    return MODELS.names()
