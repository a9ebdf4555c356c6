"""Classification heads on the penultimate features: softmax (cross-entropy) and LGM.

The LGM head follows Wan et al., CVPR 2018, "Rethinking Feature Distribution for Loss Functions
in Image Classification" (arXiv:1803.02988): features follow a K-component Gaussian mixture with
learned class means; training uses a margin on the true class's distance plus a likelihood term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Bounds on the log-variance of the diagonal LGM head: without them the variances collapse and
# the likelihood term runs to -inf (the pitfall docs/methods.md#lgm-loss reports from the Gluon
# port).
_LOG_VAR_MIN, _LOG_VAR_MAX = -4.0, 4.0


class SoftmaxHead(nn.Module):
    """A linear layer to class logits, trained with cross-entropy."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """Class logits, shape (N, K)."""
        return self.fc(features)

    def loss(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(cross-entropy loss, logits)."""
        logits = self.fc(features)
        return F.cross_entropy(logits, labels), logits


class LGMHead(nn.Module):
    """Large-Margin Gaussian Mixture head: learned class means μ_k, optional diagonal covariance.

    With d_k(f) = ½ (f − μ_k)ᵀ Σ_k⁻¹ (f − μ_k):
    inference logits are −d_k − ½ log|Σ_k| (no margin); training logits multiply the true class's
    d_k by (1 + α); the loss is CE(margin logits) + λ · mean(d_y + ½ log|Σ_y|).
    """

    def __init__(
        self,
        feature_dim: int,
        num_classes: int,
        *,
        alpha: float = 1.0,
        lam: float = 0.1,
        covariance: str = "identity",
    ) -> None:
        super().__init__()
        self.alpha = float(alpha)
        self.lam = float(lam)
        self.covariance = covariance
        self.means = nn.Parameter(torch.randn(num_classes, feature_dim))
        if covariance == "diagonal":
            self.log_var = nn.Parameter(torch.zeros(num_classes, feature_dim))
        else:
            self.register_parameter("log_var", None)

    def _log_var(self) -> Tensor | None:
        if self.log_var is None:
            return None
        return self.log_var.clamp(_LOG_VAR_MIN, _LOG_VAR_MAX)

    def half_mahalanobis(self, features: Tensor) -> Tensor:
        """d_k(f) for every sample and class, shape (N, K)."""
        diff = features[:, None, :] - self.means[None, :, :]
        log_var = self._log_var()
        if log_var is None:
            return 0.5 * diff.pow(2).sum(-1)
        return 0.5 * (diff.pow(2) / log_var.exp()[None]).sum(-1)

    def half_log_det(self) -> Tensor:
        """½ log|Σ_k| per class, shape (K,) (zeros for the identity covariance)."""
        log_var = self._log_var()
        if log_var is None:
            return self.means.new_zeros(self.means.shape[0])
        return 0.5 * log_var.sum(-1)

    def forward(self, features: Tensor) -> Tensor:
        """Inference logits −d_k − ½ log|Σ_k| (without the margin), shape (N, K)."""
        return -self.half_mahalanobis(features) - self.half_log_det()[None]

    def log_likelihood(self, features: Tensor) -> Tensor:
        """log p(f | k) = log N(f; μ_k, Σ_k) for every class k, shape (N, K)."""
        dim = self.means.shape[1]
        return self.forward(features) - 0.5 * dim * math.log(2 * math.pi)

    def loss(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(L_cls + λ·L_lkd, inference logits) for a batch."""
        distances = self.half_mahalanobis(features)
        half_log_det = self.half_log_det()
        onehot = F.one_hot(labels, distances.shape[1]).to(distances.dtype)
        margin_logits = -distances * (1.0 + self.alpha * onehot) - half_log_det[None]
        classification = F.cross_entropy(margin_logits, labels)
        likelihood = (distances.gather(1, labels[:, None]).squeeze(1) + half_log_det[labels]).mean()
        logits = -distances - half_log_det[None]
        return classification + self.lam * likelihood, logits
