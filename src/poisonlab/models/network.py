"""Network: a body that ends in the penultimate features, and a head that turns them into logits."""

from __future__ import annotations

from torch import Tensor, nn

from poisonlab.models.config import ModelConfig
from poisonlab.models.heads import LGMHead, SoftmaxHead
from poisonlab.validation import InstanceOf

FEATURE_LAYER = "body"
"""Module name whose output is the penultimate feature vector f(x) in every poisonlab network."""


class Network(nn.Module):
    """``head(body(x))``: every architecture in poisonlab has this shape.

    Layers are addressed by their module names (``dict(model.named_modules())``), e.g.
    ``body.conv1``; ``body`` itself is the penultimate feature layer. ``probe_layers`` lists the
    layers a defense reads by default (DeepFeatures' several layers, for instance).
    """

    def __init__(
        self,
        config: ModelConfig,
        body: nn.Module,
        feature_dim: int,
        probe_layers: tuple[str, ...],
    ) -> None:
        super().__init__()
        self.config = config
        self.body = body
        self.feature_dim = feature_dim
        self.probe_layers = probe_layers
        if config.head == "lgm":
            self.head: LGMHead | SoftmaxHead = LGMHead(
                feature_dim,
                config.num_classes,
                alpha=config.lgm_alpha,
                lam=config.lgm_lambda,
                covariance=config.lgm_covariance,
            )
        else:
            self.head = SoftmaxHead(feature_dim, config.num_classes)

    @property
    def feature_layer(self) -> str:
        """Name of the penultimate feature layer."""
        return FEATURE_LAYER

    @property
    def is_lgm(self) -> bool:
        """True when the head is an LGM head (so class log-likelihoods exist)."""
        return isinstance(self.head, LGMHead)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, K); for LGM heads, the inference logits without the margin."""
        return self.head(self.body(x))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features f(x), shape (N, feature_dim)."""
        return self.body(x)

    def loss(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(training loss, logits): cross-entropy, or the LGM loss with margin and likelihood."""
        return self.head.loss(self.body(x), labels)

    def layer_names(self) -> list[str]:
        """Names of all addressable layers (submodules of the body, then the head's)."""
        return [name for name, _ in self.named_modules() if name]


NETWORK = InstanceOf(Network, "a poisonlab Network (build_model, or load_checkpoint(...).model)")
"""The constraint of an argument that takes a model (:func:`poisonlab.validation.check_param`)."""
