"""The LGM head's loss and likelihood against a hand computation on a tiny example."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from poisonlab.models.heads import LGMHead, SoftmaxHead


def _head(covariance: str = "identity") -> LGMHead:
    head = LGMHead(2, 3, alpha=0.5, lam=0.1, covariance=covariance).double()
    with torch.no_grad():
        head.means.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
    return head


def test_identity_lgm_loss_matches_hand_computation() -> None:
    head = _head()
    f = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1])
    # squared distances to the means: 2, 2, 5 → d = 1, 1, 2.5
    d = torch.tensor([1.0, 1.0, 2.5], dtype=torch.float64)
    margin = -d * torch.tensor([1.0, 1.5, 1.0], dtype=torch.float64)  # true class scaled by 1+α
    log_softmax = margin - torch.logsumexp(margin, 0)
    expected = -log_softmax[1] + 0.1 * d[1]
    loss, logits = head.loss(f, y)
    assert torch.allclose(loss, expected)
    assert torch.allclose(logits[0], -d)  # inference logits carry no margin
    assert torch.allclose(head(f)[0], -d)


def test_log_likelihood_is_the_gaussian_density() -> None:
    head = _head()
    f = torch.tensor([[1.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    ll = head.log_likelihood(f).detach()
    for i in range(2):
        for k in range(3):
            sq = float(((f[i] - head.means[k].detach()) ** 2).sum())
            assert math.isclose(float(ll[i, k]), -0.5 * sq - math.log(2 * math.pi), rel_tol=1e-12)


def test_diagonal_covariance_uses_mahalanobis_and_log_det() -> None:
    head = _head("diagonal")
    with torch.no_grad():
        head.log_var.copy_(torch.log(torch.tensor([[1.0, 4.0], [0.25, 1.0], [2.0, 2.0]])))
    f = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    var = torch.tensor([[1.0, 4.0], [0.25, 1.0], [2.0, 2.0]], dtype=torch.float64)
    d = 0.5 * ((f - head.means) ** 2 / var).sum(1)
    half_log_det = 0.5 * var.log().sum(1)
    expected = -d - half_log_det - math.log(2 * math.pi)
    assert torch.allclose(head.log_likelihood(f)[0], expected)
    y = torch.tensor([2])
    margin = -d * torch.tensor([1.0, 1.0, 1.5], dtype=torch.float64) - half_log_det
    want = F.cross_entropy(margin[None], y) + 0.1 * (d[2] + half_log_det[2])
    assert torch.allclose(head.loss(f, y)[0], want)


def test_diagonal_variance_cannot_collapse() -> None:
    """A log-variance driven to -50 (or 50) is read at its bound, -4 (or 4): the likelihood is
    that of σ² = e^-4, not of σ² = e^-50, whose squared distances of ~1e22 stay finite in
    float64 and would pass a finiteness check."""
    head = _head("diagonal")
    f = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    sq = ((f - head.means.detach()) ** 2).sum(1)
    for driven, bound in ((-50.0, -4.0), (50.0, 4.0)):
        with torch.no_grad():
            head.log_var.fill_(driven)
        # log N(f; μ_k, e^bound I) in 2-d: -½ sq / e^bound - ½·2·bound - log 2π
        expected = -0.5 * sq / math.exp(bound) - bound - math.log(2 * math.pi)
        torch.testing.assert_close(head.log_likelihood(f).detach()[0], expected)


def test_softmax_head_is_cross_entropy() -> None:
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left alone
        torch.manual_seed(0)
        head = SoftmaxHead(4, 3)
    f = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1, 0])
    loss, logits = head.loss(f, y)
    assert torch.allclose(loss, F.cross_entropy(head(f), y))
    assert logits.shape == (5, 3)


def test_the_model_config_sets_the_lgm_head() -> None:
    """ModelConfig's lgm_alpha, lgm_lambda and lgm_covariance make the network's head: its loss
    is that of an LGMHead built with those values."""
    from poisonlab.models import ModelConfig, build_model

    config = ModelConfig(
        "cnn-small", 1, 8, 8, 3, head="lgm", lgm_alpha=0.5, lgm_lambda=0.3,
        lgm_covariance="diagonal", feature_dim=2,
    )  # fmt: skip
    head = build_model(config, seed=0).head.double()
    reference = LGMHead(2, 3, alpha=0.5, lam=0.3, covariance="diagonal").double()
    with torch.no_grad():
        reference.means.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]))
        reference.log_var.copy_(torch.log(torch.tensor([[1.0, 4.0], [0.25, 1.0], [2.0, 2.0]])))
        head.means.copy_(reference.means)
        head.log_var.copy_(reference.log_var)
    f, y = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([2])
    assert torch.allclose(head.loss(f, y)[0], reference.loss(f, y)[0])
