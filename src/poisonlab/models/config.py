"""ModelConfig: everything needed to rebuild a network, stored as JSON beside its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from poisonlab.errors import ConfigError

HEADS = ("softmax", "lgm")
COVARIANCES = ("identity", "diagonal")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture name, input geometry, number of classes and head settings.

    Parameters
    ----------
    arch : str
        Registry name: ``cnn-small``, ``lgm-net``, ``resnet20`` or ``inception-mini``.
    in_channels, height, width : int
        Input image geometry (C, H, W).
    num_classes : int
    head : {"softmax", "lgm"}
        Cross-entropy (softmax) head or Large-Margin Gaussian Mixture head (Wan et al. 2018).
    feature_dim : int or None
        Width of the penultimate (feature) layer; None takes the architecture's default.
    lgm_alpha, lgm_lambda : float
        LGM margin α and likelihood weight λ (seed 000: α = 1.0, λ = 0.1).
    lgm_covariance : {"identity", "diagonal"}
        Class covariances of the LGM head; identity is the seed-000 choice.
    """

    arch: str
    in_channels: int
    height: int
    width: int
    num_classes: int
    head: str = "softmax"
    feature_dim: int | None = None
    lgm_alpha: float = 1.0
    lgm_lambda: float = 0.1
    lgm_covariance: str = "identity"

    def __post_init__(self) -> None:
        for name in ("in_channels", "height", "width", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model {name} must be a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise ConfigError(f"model num_classes must be >= 2, got {self.num_classes}")
        if self.head not in HEADS:
            raise ConfigError(f"model head {self.head!r} is not one of {', '.join(HEADS)}")
        if self.lgm_covariance not in COVARIANCES:
            raise ConfigError(
                f"lgm_covariance {self.lgm_covariance!r} is not one of {', '.join(COVARIANCES)}"
            )
        if self.feature_dim is not None and self.feature_dim < 1:
            raise ConfigError(f"feature_dim must be >= 1, got {self.feature_dim}")
        if self.lgm_alpha < 0 or self.lgm_lambda < 0:
            raise ConfigError("lgm_alpha and lgm_lambda must be >= 0")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) expected by the network."""
        return (self.in_channels, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        required = {f.name for f in fields(cls) if f.default is f.default_factory}  # type: ignore[misc]
        missing = sorted(k for k in required if k not in data)
        if missing:
            raise ConfigError(f"model config is missing: {', '.join(missing)}")
        return cls(**data)
