"""ModelConfig: everything needed to rebuild a network, stored as JSON beside its weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral
from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.validation import (
    NON_NEGATIVE,
    POSITIVE_INT,
    ConstraintList,
    Interval,
    Options,
    Text,
    validate_params,
)

HEADS = ("softmax", "lgm")
COVARIANCES = ("identity", "diagonal")


MODEL_CONSTRAINTS: dict[str, ConstraintList] = {
    "arch": [Text("an architecture name")],
    "in_channels": [POSITIVE_INT],
    "height": [POSITIVE_INT],
    "width": [POSITIVE_INT],
    "num_classes": [Interval(Integral, 2, None)],
    "head": [Options(HEADS)],
    "feature_dim": [None, POSITIVE_INT],
    "lgm_alpha": [NON_NEGATIVE],
    "lgm_lambda": [NON_NEGATIVE],
    "lgm_covariance": [Options(COVARIANCES)],
}
"""Every field's constraints (:mod:`poisonlab.validation`); whether ``arch`` is registered is
checked when the model is built."""


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
        LGM margin α and likelihood weight λ (Yaseen et al. 2020: α = 1.0, λ = 0.1).
    lgm_covariance : {"identity", "diagonal"}
        Class covariances of the LGM head; identity is the Yaseen et al. 2020 choice.
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
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in validate_params("model", MODEL_CONSTRAINTS, values).items():
            object.__setattr__(self, name, value)

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
