"""ELBO fine-tuning of a mean-field Bayesian network (the copy made by models.bayesian.to_bayesian).

Per mini-batch, loss = NLL + kl_weight · KL(q‖p) / N_train, where NLL is the network's own
training loss (cross-entropy, or the LGM loss for an LGM head) averaged over the batch, N_train
the number of training samples, and KL(q‖p) the SUM over every variational weight and bias
(:func:`poisonlab.models.bayesian.kl_divergence`, which explains why bayesian-torch's
``get_kl_loss`` is not used). With kl_weight = 1 this is the negative ELBO per sample, an unbiased
mini-batch estimate of −ELBO / N_train (Blundell et al. 2015, "Weight Uncertainty in Neural
Networks", arXiv:1505.05424). All non-variational modules stay in eval mode while fine-tuning
(BatchNorm uses and keeps its running statistics, dropout is off): the weight posterior is the only
source of randomness, as during inference. With Adam, each ρ = softplus⁻¹(σ) moves by about
``lr`` per step whatever the KL scale, so a few epochs leave σ within a small factor of its MOPED
start.

The mini-batch loop is :func:`poisonlab.train.loop.run_epochs`, the one :func:`train_model` uses,
with the KL term as its penalty hook and ``modules="eval"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.models.bayesian import kl_divergence
from poisonlab.models.network import Network
from poisonlab.train.loop import run_epochs

__all__ = ["ElboHistory", "fine_tune_elbo"]


@dataclass(frozen=True)
class ElboHistory:
    """Per-epoch mean NLL, KL(q‖p)/N_train (before kl_weight), stochastic-pass accuracy, seconds."""

    nll: list[float] = field(default_factory=list)
    kl_per_sample: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (rounded)."""
        return {key: [round(v, 6) for v in values] for key, values in vars(self).items()}


def fine_tune_elbo(
    bnn: Network,
    data: ImageDataset,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 1e-3,
    kl_weight: float = 1.0,
    seed: int = 0,
    description: str = "BNN: ELBO fine-tuning",
) -> ElboHistory:
    """Fine-tune ``bnn`` in place with Adam on loss = NLL + kl_weight · KL(q‖p) / len(data).

    Parameters
    ----------
    bnn : Network
        A Bayesian network from :func:`~poisonlab.models.bayesian.to_bayesian` (fine-tuned on
        its own device); left in eval mode.
    data : ImageDataset
        The data the deterministic model was trained on (the suspect data, claimed labels).
    epochs, batch_size, lr : int, int, float
        Passes over ``data``, mini-batch size and Adam learning rate.
    kl_weight : float >= 0
        Multiplies the ELBO-consistent KL weight 1/N_train (1 = the ELBO; 0 = no KL term).
    seed : int
        Seeds the shuffling and the Flipout samples (the caller's global RNG is restored).

    Returns
    -------
    ElboHistory
    """
    if epochs < 1 or batch_size < 1 or not lr > 0 or not kl_weight >= 0:
        raise ConfigError(
            "`epochs` and `batch_size` must be >= 1, `lr` > 0 and `kl_weight` >= 0, got "
            f"{epochs}, {batch_size}, {lr} and {kl_weight}"
        )
    if len(data) == 0:
        raise ConfigError("cannot fine-tune on an empty data set")
    device = next(bnn.parameters()).device
    n = len(data)
    history = ElboHistory()
    for stats in run_epochs(
        bnn,
        data.images.to(device),
        data.labels.to(device),
        torch.optim.Adam(bnn.parameters(), lr=lr),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        modules="eval",
        penalty=lambda model: kl_divergence(model) / n,
        penalty_weight=kl_weight,
        description=description,
    ):
        history.nll.append(stats.loss)
        history.kl_per_sample.append(stats.penalty)
        history.accuracy.append(stats.accuracy)
        history.seconds.append(stats.seconds)
    bnn.eval()
    return history
