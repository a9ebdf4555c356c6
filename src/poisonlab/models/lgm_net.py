"""lgm-net: the Yaseen et al. 2020 MNIST network (six 5×5 convolutions with PReLU, a 2-d feature
layer)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.config import ModelConfig
from poisonlab.models.network import Network
from poisonlab.models.registry import register_model


@register_model("lgm-net")
def lgm_net(config: ModelConfig) -> Network:
    """Three stages of [Conv5×5-PReLU-Conv5×5-PReLU-MaxPool2] with 32, 64, 128 channels, then
    Flatten-PReLU-Linear to a 2-d feature (``feature_dim`` overrides it), as in Yaseen et al. 2020
    App. C.

    Inputs must be at least 8×8 (three 2×2 pools).
    """
    c, h, w = config.input_shape
    if min(h, w) < 8:
        raise ConfigError(f"lgm-net needs images of at least 8×8 pixels, got {h}×{w}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = c
    for stage, width in enumerate((32, 64, 128), start=1):
        layers[f"conv{stage}a"] = nn.Conv2d(channels, width, 5, padding=2)
        layers[f"prelu{stage}a"] = nn.PReLU()
        layers[f"conv{stage}b"] = nn.Conv2d(width, width, 5, padding=2)
        layers[f"prelu{stage}b"] = nn.PReLU()
        layers[f"pool{stage}"] = nn.MaxPool2d(2)
        channels = width
        h, w = h // 2, w // 2
    feature_dim = config.feature_dim or 2
    layers["flatten"] = nn.Flatten()
    layers["prelu_fc"] = nn.PReLU()
    layers["fc"] = nn.Linear(128 * h * w, feature_dim)
    probes = ("body.pool1", "body.pool2", "body.pool3", "body.fc")
    return Network(config, nn.Sequential(layers), feature_dim, probe_layers=probes)
