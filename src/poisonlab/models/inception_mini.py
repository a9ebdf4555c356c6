"""inception-mini: the Schulth et al. 2022 GTSRB network (one Inception-A module, about 1.1M
parameters)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from poisonlab.errors import ConfigError
from poisonlab.models.config import ModelConfig
from poisonlab.models.network import Network
from poisonlab.models.registry import register_model


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, padding: int = 0) -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(),
        )
    )


class InceptionA(nn.Module):
    """Branches 1×1:64; 1×1:48→5×5:64; 1×1:64→3×3:96→3×3:96; avgpool→1×1:32 (256 channels out)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = _conv_bn_relu(in_channels, 64, 1)
        self.branch5x5 = nn.Sequential(
            _conv_bn_relu(in_channels, 48, 1), _conv_bn_relu(48, 64, 5, padding=2)
        )
        self.branch3x3 = nn.Sequential(
            _conv_bn_relu(in_channels, 64, 1),
            _conv_bn_relu(64, 96, 3, padding=1),
            _conv_bn_relu(96, 96, 3, padding=1),
        )
        self.branch_pool = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            _conv_bn_relu(in_channels, 32, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Concatenate the four branches along channels."""
        branches = (self.branch1x1, self.branch5x5, self.branch3x3, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)


def _min_side() -> int:
    """Smallest input side for which three [pool2 → conv2×2] stages keep a positive size."""
    side = 1
    while True:
        s = side
        for _ in range(3):
            s = s // 2 - 1
        if s >= 1:
            return side
        side += 1


@register_model("inception-mini")
def inception_mini(config: ModelConfig) -> Network:
    """Inception-A on the raw input, 3 × [MaxPool2 → Conv2×2(256) → BN → ReLU], global max pool,
    then FC256-ReLU-Dropout-FC128-ReLU-Dropout; the 128-d output is the penultimate feature.
    """
    c, h, w = config.input_shape
    side = _min_side()
    if min(h, w) < side:
        raise ConfigError(
            f"inception-mini needs images of at least {side}×{side} pixels, got {h}×{w} "
            "(use cnn-small for smaller images)"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict(inception=InceptionA(c))
    for stage in (1, 2, 3):
        layers[f"pool{stage}"] = nn.MaxPool2d(2)
        layers[f"conv{stage}"] = nn.Conv2d(256, 256, 2, bias=False)
        layers[f"bn{stage}"] = nn.BatchNorm2d(256)
        layers[f"relu{stage}"] = nn.ReLU()
    feature_dim = config.feature_dim or 128
    layers.update(
        pool=nn.AdaptiveMaxPool2d(1),
        flatten=nn.Flatten(),
        fc1=nn.Linear(256, 256),
        relu_fc1=nn.ReLU(),
        drop1=nn.Dropout(0.5),
        fc2=nn.Linear(256, feature_dim),
        relu_fc2=nn.ReLU(),
        drop2=nn.Dropout(0.5),
    )
    probes = ("body.inception", "body.relu2", "body.relu_fc1", "body.relu_fc2")
    return Network(config, nn.Sequential(layers), feature_dim, probe_layers=probes)
