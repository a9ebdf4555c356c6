"""cnn-small: the Subedar et al. 2019 "SCNN" (2 conv + 2 dense), the Keras MNIST CNN shape."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.config import ModelConfig
from poisonlab.models.network import Network
from poisonlab.models.registry import register_model


@register_model("cnn-small")
def cnn_small(config: ModelConfig) -> Network:
    """Conv3×3(32)-ReLU-Conv3×3(64)-ReLU-MaxPool2-Dropout(.25)-Dense(128)-ReLU-Dropout(.5).

    Penultimate features are the 128-d dense output (``feature_dim`` overrides the width).
    Inputs must be at least 6×6 (two unpadded 3×3 convolutions and a 2×2 pool).
    """
    c, h, w = config.input_shape
    if min(h, w) < 6:
        raise ConfigError(f"cnn-small needs images of at least 6×6 pixels, got {h}×{w}")
    ph, pw = (h - 4) // 2, (w - 4) // 2
    width = config.feature_dim or 128
    body = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(c, 32, 3),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(32, 64, 3),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            drop1=nn.Dropout(0.25),
            flatten=nn.Flatten(),
            fc1=nn.Linear(64 * ph * pw, width),
            relu3=nn.ReLU(),
            drop2=nn.Dropout(0.5),
        )
    )
    return Network(config, body, width, probe_layers=("body.relu1", "body.relu2", "body.relu3"))
