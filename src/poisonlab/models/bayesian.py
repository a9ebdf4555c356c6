"""Mean-field Bayesian copies of trained networks: MOPED conversion, ELBO fine-tuning, MC inference.

Subedar et al. 2019 (Subedar et al., "Deep Probabilistic Models to Detect Data Poisoning Attacks")
turns the model trained on the suspect data into a Bayesian neural network with mean-field
variational inference (MFVI) and Flipout (Wen et al. 2018, arXiv:1803.04386), with weight priors and
posteriors from MOPED (Krishnan, Subedar, Tickoo, AAAI 2020, arXiv:1906.05323); docs/methods.md#bnn.
The layers are bayesian-torch's (``dnn_to_bnn`` with ``type="Flipout"``).

Conversion (:func:`to_bayesian`). A deep copy of the network (the caller's model is never touched)
has every ``Conv*``/``Linear`` module replaced by its Flipout counterpart with, per weight w_MLE,
posterior q(w) = N(w_MLE, (δ·|w_MLE|)²) and prior p(w) = N(w_MLE, σ_p²). ``dnn_to_bnn`` sets only
the posterior (its prior mean stays ``prior_mu`` = 0); the prior mean is copied from the trained
weights afterwards, as MOPED intends (``prior_mean="zero"`` keeps the library's behaviour).
Defaults: δ = 0.1, the value of the MOPED paper's experiments (bayesian-torch's examples use 0.2
and 0.5); σ_p = 1, bayesian-torch's default, a standard deviation although the layer argument is
named ``prior_variance``. Other modules stay deterministic point estimates: BatchNorm (its running
statistics frozen) and the LGM head, which has no Conv/Linear layer to convert (its class means
are fine-tuned as ordinary parameters); so for an LGM model only the body is Bayesian.

ELBO fine-tuning lives in :mod:`poisonlab.train.elbo`, with the KL term :func:`kl_divergence` here
(the KL(q‖p) of the ELBO, summed over every weight). bayesian-torch's ``get_kl_loss`` returns
something else: Σ over layers of (mean KL over the layer's weights + mean KL over its biases), so
its README recipe ``CE + get_kl_loss / B`` gives each weight of an n-weight tensor the factor
1/(n·B) where the ELBO has 1/N_train: n·B/N_train times too weak for big tensors (≈ 2,500× for
cnn-small's 1.2M-weight dense layer, B = 128, N_train = 60,000), too strong for small ones.

Inference (:func:`mc_probabilities`). T stochastic passes (default 40, Subedar et al. 2019) give (T,
N, K) softmax probabilities, computed per batch with a Python loop over passes and batches only.
bayesian-torch's Flipout draws ONE Gaussian ε per layer per forward call and decorrelates the
examples of a batch with random sign tensors, (x∘s)·ΔW∘r (for convolutions it draws the signs per
input and output element, not per channel). ``replicas`` = r > 1 stacks r copies of the batch into
one forward call: the r copies of an input then share |ε| and differ only in their signs, so their
weight perturbations ΔW∘(r_t s_tᵀ) are pairwise uncorrelated with the right marginal N(0, σ²) but
NOT independent (a pre-activation's spread across copies is Σ_i σ_i²ε_i²x_i², one draw, instead of
its expectation Σ_i σ_i²x_i²). The default r = 1 gives T independent weight samples per input, as
eq. 1 of Subedar et al. 2019 assumes; bench/results/bnn.md measures what r = T changes.

Randomness. bayesian-torch samples from torch's GLOBAL generator (``normal_``/``uniform_`` inside
the layers), so every function here that samples takes an integer ``seed``, forks the global RNG
state, seeds it, and restores it on exit: results repeat for a seed and the caller's global RNG
is left as it was. Runs on the model's device (CUDA when the model is there).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poisonlab import progress
from poisonlab.errors import ConfigError
from poisonlab.models.borrow import borrowed
from poisonlab.models.network import Network
from poisonlab.seeding import seeded_global_rng

PRIOR_MEANS = ("mle", "zero")

# (posterior mean, posterior rho, prior mean buffer, prior sigma buffer) attribute names of
# bayesian-torch's variational layers: weights are "mu_weight" in Linear*, "mu_kernel" in Conv*.
_WEIGHT_NAMES = {
    "weight": ("mu_weight", "rho_weight", "prior_weight_mu", "prior_weight_sigma"),
    "kernel": ("mu_kernel", "rho_kernel", "prior_weight_mu", "prior_weight_sigma"),
}
_BIAS_NAMES = ("mu_bias", "rho_bias", "prior_bias_mu", "prior_bias_sigma")


def variational_layers(model: nn.Module) -> dict[str, Any]:
    """The bayesian-torch variational layers of ``model`` by module name."""
    from bayesian_torch.layers.base_variational_layer import BaseVariationalLayer_

    return {n: m for n, m in model.named_modules() if isinstance(m, BaseVariationalLayer_)}


def posterior_tensors(layer: nn.Module) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """(μ, ρ, prior μ, prior σ) of a variational layer's weight and, when it has one, bias."""
    names = _WEIGHT_NAMES["kernel" if hasattr(layer, "mu_kernel") else "weight"]
    groups = [names] + ([_BIAS_NAMES] if getattr(layer, "mu_bias", None) is not None else [])
    return [tuple(getattr(layer, n) for n in group) for group in groups]  # type: ignore[misc]


def _check_convertible(model: nn.Module) -> None:
    """Refuse what ``dnn_to_bnn`` would silently get wrong."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
            raise ConfigError(
                f"layer {name!r} pads with {module.padding_mode!r}; bayesian-torch's Flipout "
                "convolutions only zero-pad, so the converted network would differ"
            )
        if isinstance(module, nn.modules.lazy.LazyModuleMixin):
            raise ConfigError(f"layer {name!r} is lazy; run one forward pass before converting")


def to_bayesian(
    model: Network, *, delta: float = 0.1, prior_sigma: float = 1.0, prior_mean: str = "mle"
) -> Network:
    """A MOPED mean-field Flipout copy of a trained network (module docstring).

    Parameters
    ----------
    model : Network
        A trained deterministic network; it is deep-copied and never modified.
    delta : float > 0
        MOPED δ: posterior σ = δ·|w_MLE| for every converted weight and bias.
    prior_sigma : float > 0
        Standard deviation of the Gaussian prior of every converted weight.
    prior_mean : {"mle", "zero"}
        Prior mean w_MLE (MOPED's empirical-Bayes prior) or 0 (``dnn_to_bnn`` left alone).

    Returns
    -------
    Network
        The Bayesian copy on the model's device, in eval mode.

    Raises
    ------
    ConfigError
        Bad parameters, layers bayesian-torch cannot convert faithfully, or nothing to convert.
    """
    if not delta > 0 or not prior_sigma > 0:
        raise ConfigError(f"delta and prior_sigma must be > 0, got {delta} and {prior_sigma}")
    if prior_mean not in PRIOR_MEANS:
        raise ConfigError(f"prior_mean must be one of {', '.join(PRIOR_MEANS)}, got {prior_mean!r}")
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn

    _check_convertible(model)
    device = next(model.parameters()).device
    bnn = copy.deepcopy(model)
    settings = {
        "prior_mu": 0.0,
        "prior_sigma": float(prior_sigma),
        "posterior_mu_init": 0.0,
        "posterior_rho_init": -3.0,  # overwritten by MOPED below
        "type": "Flipout",
        "moped_enable": True,
        "moped_delta": float(delta),
    }
    with seeded_global_rng(0):  # layer constructors draw (then discarded) random initial values
        dnn_to_bnn(bnn, settings)
    bnn.to(device)
    layers = variational_layers(bnn)
    if not layers:
        raise ConfigError(f"{model.config.arch} has no Conv/Linear layer to make Bayesian")
    if prior_mean == "mle":
        originals = dict(model.named_modules())
        with torch.no_grad():
            for name, layer in layers.items():
                (_, _, weight_prior, _), *bias = posterior_tensors(layer)
                weight_prior.copy_(originals[name].weight)
                if bias:
                    bias[0][2].copy_(originals[name].bias)
    for parameter in bnn.parameters():
        parameter.requires_grad_(True)
    return bnn.eval()


def kl_divergence(bnn: nn.Module) -> Tensor:
    """KL(q‖p) summed over every variational weight and bias, a scalar tensor (nats).

    Each tensor's KL is bayesian-torch's own ``kl_div`` (a MEAN over the tensor's elements)
    times its number of elements, with σ_q = softplus(ρ) as in the layers' forward pass.
    """
    total = torch.zeros((), device=next(bnn.parameters()).device)
    for layer in variational_layers(bnn).values():
        for mu, rho, prior_mu, prior_sigma in posterior_tensors(layer):
            total = total + mu.numel() * layer.kl_div(mu, F.softplus(rho), prior_mu, prior_sigma)
    return total


def posterior_sigma_ratio(bnn: nn.Module) -> float:
    """Median of σ_q / |μ| over every variational weight with |μ| > 1e-6 (δ right after MOPED)."""
    ratios = []
    with torch.no_grad():
        for layer in variational_layers(bnn).values():
            for mu, rho, _, _ in posterior_tensors(layer):
                keep = mu.abs() > 1e-6
                ratios.append((F.softplus(rho[keep]) / mu[keep].abs()).flatten().cpu())
    return float(torch.cat(ratios).median()) if ratios else float("nan")


@torch.no_grad()
def mc_probabilities(
    bnn: nn.Module,
    images: Tensor,
    *,
    samples: int = 40,
    batch_size: int = 256,
    replicas: int = 1,
    seed: int = 0,
    description: str = "BNN: Monte-Carlo passes",
) -> Tensor:
    """Softmax probabilities of ``samples`` stochastic forward passes (eval mode: BN frozen).

    Parameters
    ----------
    bnn : nn.Module
        A Bayesian network (Flipout layers sample on every call, even in eval mode).
    images : Tensor of shape (N, C, H, W)
    samples : int >= 1
        T, the number of Monte-Carlo passes.
    batch_size : int >= 1
        Images per batch (a forward call holds ``replicas · batch_size`` images).
    replicas : int >= 1
        Passes computed in one forward call by stacking copies of the batch; they share the
        layers' Gaussian draw and differ in their Flipout signs (module docstring). 1 = every pass
        has its own draw.
    seed : int
        Seeds the passes (the caller's global RNG state is restored afterwards).

    Returns
    -------
    Tensor of shape (T, N, K), float32, CPU
    """
    if samples < 1 or batch_size < 1 or replicas < 1:
        raise ConfigError("samples, batch_size and replicas must be >= 1")
    device = next(bnn.parameters()).device
    n = len(images)
    chunks: list[Tensor] = []
    groups = [min(replicas, samples - t) for t in range(0, samples, replicas)]
    total = len(groups) * ((n + batch_size - 1) // batch_size)
    with borrowed(bnn), seeded_global_rng(seed), progress.bar(description, total=total) as bar:
        for first in range(0, n, batch_size):
            x = images[first : first + batch_size].to(device)
            parts = []
            for r in groups:
                stacked = x.expand(r, *x.shape).reshape(r * len(x), *x.shape[1:])
                logits = bnn(stacked).float().reshape(r, len(x), -1)
                parts.append(torch.softmax(logits, dim=-1).cpu())
                bar.advance(1)
            chunks.append(torch.cat(parts))
    if not chunks:
        num_classes = bnn.config.num_classes if isinstance(bnn, Network) else 0
        return torch.empty(samples, 0, num_classes)
    return torch.cat(chunks, dim=1)
