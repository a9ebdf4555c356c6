"""resnet20: the CIFAR ResNet-20 of He et al. 2016 (3 stages × 3 basic blocks, 16/32/64)."""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from poisonlab.errors import ConfigError
from poisonlab.models.config import ModelConfig
from poisonlab.models.network import Network
from poisonlab.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual connection (1×1 conv-BN shortcut when shapes change).

    Every activation is its own module and none is reused, so LRP hooks (zennit) see each layer.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


@register_model("resnet20")
def resnet20(config: ModelConfig) -> Network:
    """Stem conv3×3(16)-BN-ReLU, stages of 16/32/64 channels (3 blocks each), global average pool.

    Penultimate features are the 64-d pooled vector; a ``feature_dim`` other than 64 adds a
    linear projection. Inputs must be at least 4×4.
    """
    c, h, w = config.input_shape
    if min(h, w) < 4:
        raise ConfigError(f"resnet20 needs images of at least 4×4 pixels, got {h}×{w}")
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(c, 16, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(16),
        relu=nn.ReLU(),
    )
    channels = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        blocks = [
            BasicBlock(channels if i == 0 else width, width, 2 if i == 0 and stage > 1 else 1)
            for i in range(3)
        ]
        layers[f"stage{stage}"] = nn.Sequential(*blocks)
        channels = width
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    feature_dim = config.feature_dim or 64
    if feature_dim != 64:
        layers["project"] = nn.Linear(64, feature_dim)
    probes = ("body.relu", "body.stage1", "body.stage2", "body.stage3", "body")
    return Network(config, nn.Sequential(layers), feature_dim, probe_layers=probes)
