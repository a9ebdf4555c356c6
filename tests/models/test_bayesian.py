"""MOPED conversion, the ELBO's KL term, fine-tuning and Monte-Carlo inference (models.bayesian).

Tiny untrained networks on 1×8×8 inputs (cnn-small, resnet20 for BatchNorm and bias-free
convolutions, an LGM head), one torch thread: each test takes well under a few seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributions as D
import torch.nn.functional as F
from torch import nn

from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.metrics.uncertainty import backdoor_accuracy, mc_accuracy
from poisonlab.models import ModelConfig, Network, build_model
from poisonlab.models.bayesian import (
    kl_divergence,
    mc_probabilities,
    posterior_sigma_ratio,
    posterior_tensors,
    to_bayesian,
    variational_layers,
)
from poisonlab.train import predict
from poisonlab.train.elbo import fine_tune_elbo
from tests.conftest import blobs_dataset


def tiny(arch: str = "cnn-small", head: str = "softmax", num_classes: int = 3) -> Network:
    """A seeded, untrained network for 1×8×8 images."""
    return build_model(ModelConfig(arch, 1, 8, 8, num_classes, head=head, feature_dim=16), seed=0)


def snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "grads": [p.grad is None for p in model.parameters()],
    }


def test_conversion_and_use_leave_the_model_bitwise_unchanged() -> None:
    model = tiny("resnet20")
    model.train()
    model.head.fc.weight.requires_grad_(False)  # a frozen layer stays frozen (the copy trains it)
    before = snapshot(model)
    rng_before = torch.random.get_rng_state()
    bnn = to_bayesian(model)
    data = blobs_dataset(n_per_class=8)
    fine_tune_elbo(bnn, data, epochs=1, batch_size=8)
    mc_probabilities(bnn, data.images, samples=3)
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["modules"] == before["modules"]
    assert after["grads"] == before["grads"]
    assert torch.equal(torch.random.get_rng_state(), rng_before), "global RNG state restored"


@pytest.mark.parametrize("arch", ["cnn-small", "resnet20"])
def test_moped_initialisation(arch: str) -> None:
    """μ = w, σ = δ|w|, prior μ = w (weights and biases), prior σ as given; nothing left deterministic."""
    model = tiny(arch)
    with torch.no_grad():  # some exact zeros: their σ is ~1e-20, not NaN
        model.body.get_submodule("conv1" if arch == "cnn-small" else "conv").weight[0, 0, 0, 0] = 0
    delta, prior_sigma = 0.3, 0.7
    bnn = to_bayesian(model, delta=delta, prior_sigma=prior_sigma)
    originals = dict(model.named_modules())
    layers = variational_layers(bnn)
    deterministic = [n for n, m in originals.items() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sorted(layers) == sorted(deterministic)
    assert not any(isinstance(m, nn.Conv2d | nn.Linear) for m in bnn.modules())
    for name, layer in layers.items():
        source = originals[name]
        expected = [source.weight] + ([source.bias] if source.bias is not None else [])
        tensors = posterior_tensors(layer)
        assert len(tensors) == len(expected)
        for (mu, rho, prior_mu, prior_sd), w in zip(tensors, expected, strict=True):
            assert torch.equal(mu, w)
            assert torch.equal(prior_mu, w)
            assert torch.all(prior_sd == prior_sigma)
            sigma = F.softplus(rho)
            big = w.abs() > 1e-4
            torch.testing.assert_close(sigma[big], delta * w[big].abs(), rtol=1e-4, atol=0)
            assert torch.all(torch.isfinite(rho)) and torch.all(sigma[~big] <= delta * 1e-4 + 1e-12)
    zero_prior = to_bayesian(model, prior_mean="zero")
    for layer in variational_layers(zero_prior).values():
        for _, _, prior_mu, _ in posterior_tensors(layer):
            assert torch.all(prior_mu == 0)


def test_tiny_delta_reproduces_the_deterministic_network() -> None:
    """With σ → 0 every pass is the trained network: the conversion keeps its function."""
    model = tiny().eval()
    images = blobs_dataset(n_per_class=4).images
    probs = mc_probabilities(to_bayesian(model, delta=1e-7), images, samples=3)
    expected = torch.softmax(model(images), -1)
    for t in range(3):
        torch.testing.assert_close(probs[t], expected, atol=1e-5, rtol=0)


def test_lgm_head_stays_deterministic_and_the_body_is_bayesian() -> None:
    model = tiny(head="lgm")
    bnn = to_bayesian(model)
    assert type(bnn.head) is type(model.head)
    assert torch.equal(bnn.head.means, model.head.means)
    assert all(name.startswith("body.") for name in variational_layers(bnn))
    probs = mc_probabilities(bnn, blobs_dataset(n_per_class=4).images, samples=4)
    assert not torch.allclose(probs[0], probs[1])


def test_bad_conversions_are_config_errors() -> None:
    model = tiny()
    with pytest.raises(ConfigError):
        to_bayesian(model, delta=0.0)
    with pytest.raises(ConfigError):
        to_bayesian(model, prior_sigma=-1.0)
    with pytest.raises(ConfigError):
        to_bayesian(model, prior_mean="random")
    model.body.conv1.padding_mode = "reflect"
    with pytest.raises(ConfigError, match="pads"):
        to_bayesian(model)


def test_kl_is_the_sum_over_every_weight_unlike_get_kl_loss() -> None:
    """Our KL = Σ over all weights of KL(N(μ, σ²) ‖ N(μ_p, σ_p²)); bayesian-torch's get_kl_loss
    is Σ over layers of per-tensor MEANS, which is what the module docstring says."""
    from bayesian_torch.models.dnn_to_bnn import get_kl_loss

    bnn = to_bayesian(tiny("resnet20"), delta=0.2, prior_sigma=0.5)
    with torch.no_grad():  # move the posterior away from the prior so the KL has all its terms
        for layer in variational_layers(bnn).values():
            for mu, _, _, _ in posterior_tensors(layer):
                mu.add_(0.01)
    total, means = 0.0, 0.0
    for layer in variational_layers(bnn).values():
        for mu, rho, prior_mu, prior_sd in posterior_tensors(layer):
            posterior = D.Normal(mu.detach(), F.softplus(rho.detach()))
            per_weight = D.kl_divergence(posterior, D.Normal(prior_mu, prior_sd))
            total += float(per_weight.double().sum())
            means += float(per_weight.double().mean())
    assert float(kl_divergence(bnn).detach()) == pytest.approx(total, rel=1e-4)
    assert float(get_kl_loss(bnn).detach()) == pytest.approx(means, rel=1e-4)
    assert total > 100 * means


def test_kl_vanishes_when_the_posterior_is_the_prior() -> None:
    bnn = to_bayesian(tiny(), prior_sigma=0.05)
    with torch.no_grad():
        for layer in variational_layers(bnn).values():
            for _, rho, _, prior_sd in posterior_tensors(layer):
                rho.copy_(torch.log(torch.expm1(prior_sd)))
    assert abs(float(kl_divergence(bnn).detach())) < 1e-2


def test_fine_tuning_is_seeded_keeps_batchnorm_and_weighs_the_kl() -> None:
    """Same seed → same posterior; BatchNorm statistics frozen; the KL term raises every σ (its
    gradient points towards the prior's σ_p = 1 ≫ δ|w|), the data term alone does not."""
    model, data = tiny("resnet20"), blobs_dataset(n_per_class=5)
    start = sigmas(to_bayesian(model))
    runs = []
    for kl_weight in (1.0, 1.0, 0.0):
        bnn = to_bayesian(model)
        history = fine_tune_elbo(bnn, data, epochs=2, batch_size=5, lr=1e-2, kl_weight=kl_weight)
        runs.append((bnn, history))
    (first, h1), (second, h2), (no_kl, _) = runs
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert (h1.nll, h1.kl_per_sample, h1.accuracy) == (h2.nll, h2.kl_per_sample, h2.accuracy)
    assert len(h1.nll) == 2 and all(math.isfinite(v) for v in h1.kl_per_sample)
    for name, buffer in model.named_buffers():
        if "running" in name:
            assert torch.equal(first.get_buffer(name), buffer), name
    # 6 Adam steps of lr 1e-2: every ρ moves up by about 0.06 under the KL's pull
    assert (sigmas(first) > start).all()
    assert float((sigmas(first) / start).median()) == pytest.approx(math.exp(0.06), rel=0.01)
    assert float((sigmas(no_kl) > start).float().mean()) < 0.6
    assert posterior_sigma_ratio(first) > 0.1
    assert not first.training


def sigmas(bnn: nn.Module) -> torch.Tensor:
    """σ = softplus(ρ) of every variational weight and bias, flattened."""
    return torch.cat(
        [F.softplus(rho.detach()).flatten() for layer in variational_layers(bnn).values()
         for _, rho, _, _ in posterior_tensors(layer)]
    )  # fmt: skip


def test_mc_passes_differ_and_repeat_under_a_seed() -> None:
    bnn = to_bayesian(tiny(), delta=0.5)
    images = blobs_dataset(n_per_class=5).images
    probs = mc_probabilities(bnn, images, samples=6, batch_size=4, seed=3)
    assert probs.shape == (6, 15, 3) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, 15))
    assert all(not torch.allclose(probs[0], probs[t]) for t in range(1, 6))
    assert torch.equal(probs, mc_probabilities(bnn, images, samples=6, batch_size=4, seed=3))
    assert not torch.equal(probs, mc_probabilities(bnn, images, samples=6, batch_size=4, seed=4))
    stacked = mc_probabilities(bnn, images, samples=6, batch_size=4, replicas=4, seed=3)
    assert stacked.shape == probs.shape
    assert all(not torch.allclose(stacked[0], stacked[t]) for t in range(1, 6))
    assert mc_probabilities(bnn, images[:0], samples=2).shape == (2, 0, 3)


def test_replicas_share_the_gaussian_draw_and_differ_in_signs() -> None:
    """What stacking copies into one Flipout call does (models.bayesian docstring): across copies
    an output's variance is Σ_i σ_i²ε_i²x_i² for the ONE ε drawn in that call, while separate
    calls (independent ε) have the expected variance Σ_i σ_i²x_i²."""
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn

    with torch.random.fork_rng(devices=[]):  # Flipout draws from the global RNG: seed, restore
        torch.manual_seed(0)
        layer = nn.Sequential(nn.Linear(6, 1, bias=False))
        dnn_to_bnn(layer, {"prior_mu": 0.0, "prior_sigma": 1.0, "posterior_mu_init": 0.0,
                           "posterior_rho_init": 0.0, "type": "Flipout", "moped_enable": False})  # fmt: skip
        flipout = layer[0]
        x = torch.tensor([[1.0, -2.0, 0.5, 3.0, -1.0, 2.0]])
        sigma = F.softplus(flipout.rho_weight.detach())
        with torch.no_grad():
            copies = layer(x.expand(20000, 6)).squeeze(1)
            eps = flipout.eps_weight.clone()
            separate = torch.cat([layer(x) for _ in range(4000)]).squeeze(1)
    mean = float(flipout.mu_weight.detach() @ x[0])
    shared = float(((sigma * eps * x) ** 2).sum())
    expected = float(((sigma * x) ** 2).sum())
    assert float(copies.mean()) == pytest.approx(mean, abs=0.05 * shared**0.5)
    assert float(copies.var()) == pytest.approx(shared, rel=0.05)
    assert float(separate.var()) == pytest.approx(expected, rel=0.1)
    # this draw is 15% off the expectation: the 5% check above tells the two variances apart
    assert abs(shared - expected) > 0.12 * expected


def test_backdoor_accuracy_is_table_one() -> None:
    model = tiny().eval()
    clean = blobs_dataset(n_per_class=4)
    triggered = clean.with_labels((clean.labels + 1) % 3)
    gen = torch.Generator().manual_seed(0)
    mc_clean = torch.softmax(torch.randn(5, len(clean), 3, generator=gen), -1)
    mc_trig = torch.softmax(torch.randn(5, len(clean), 3, generator=gen), -1)
    predicted = predict(model, clean.images)
    result = backdoor_accuracy(predicted, predicted, clean, triggered, mc_clean, mc_trig)
    assert result.dnn_clean == pytest.approx(float((predicted == clean.labels).float().mean()))
    assert result.dnn_triggered == pytest.approx(
        float((predicted == triggered.labels).float().mean())
    )
    assert result.bnn_clean == mc_accuracy(mc_clean, clean.labels)
    assert result.bnn_triggered == mc_accuracy(mc_trig, triggered.labels)
    assert result.n_clean == result.n_triggered == len(clean)
    empty = ImageDataset(clean.images[:0], clean.labels[:0], 3)
    none = predicted[:0]
    nothing = backdoor_accuracy(none, none, empty, empty, mc_clean[:, :0], mc_trig[:, :0])
    assert math.isnan(nothing.dnn_clean) and math.isnan(nothing.bnn_triggered)
