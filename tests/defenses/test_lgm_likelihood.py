"""LGM likelihood filter (Yaseen et al. 2020): planted poisons, the χ² rule's false-positive rate,
an oracle for the likelihood, and the filter → fine-tune → re-measure loop.

The networks here pass features straight through (a fixed affine map from [0, 1] "pixels" to
features), so features can be drawn from known Gaussians while the real Evidence / LGM head path
computes them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from poisonlab.attacks.base import PoisonedDataset
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence, TargetFPR, build_detector
from poisonlab.defenses.lgm_likelihood import LGMLikelihood, chi2_critical, chi2_sf
from poisonlab.errors import ConfigError, DataError
from poisonlab.metrics.detection import evaluate_detection
from poisonlab.models import ModelConfig, Network
from poisonlab.train import TrainConfig
from poisonlab.workflows import attack_success, filter_and_finetune

RANGE = 12.0  # features live in [-RANGE, RANGE]


def feature_network(means: torch.Tensor, *, head: str = "lgm", log_var=None) -> Network:
    """An LGM network whose body maps pixel p in [0, 1] to the feature 2·RANGE·p − RANGE."""
    k, d = means.shape
    config = ModelConfig(
        "cnn-small",
        1,
        1,
        d,
        k,
        head=head,
        lgm_covariance="diagonal" if log_var is not None else "identity",
    )
    linear = nn.Linear(d, d)
    with torch.no_grad():
        linear.weight.copy_(2 * RANGE * torch.eye(d))
        linear.bias.fill_(-RANGE)
    net = Network(config, nn.Sequential(nn.Flatten(), linear), d, probe_layers=("body",))
    if head == "lgm":
        with torch.no_grad():
            net.head.means.copy_(means)
            if log_var is not None:
                net.head.log_var.copy_(log_var)
    return net.eval()


def as_images(features: torch.Tensor, labels: torch.Tensor, k: int) -> ImageDataset:
    """Features (N, d) as 1×1×d images in [0, 1] for :func:`feature_network`."""
    pixels = ((features.clamp(-RANGE, RANGE) + RANGE) / (2 * RANGE)).float()
    return ImageDataset(pixels[:, None, None, :], labels.long(), k, name="features")


def gaussian_sample(means, labels, generator, std=None) -> torch.Tensor:
    """Features drawn from N(μ_y, diag(std_y²)) (identity when std is None)."""
    noise = torch.randn(len(labels), means.shape[1], generator=generator, dtype=torch.float64)
    if std is not None:
        noise = noise * std[labels]
    return means[labels].double() + noise


MEANS = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 6.0]])


def planted(n_clean: int = 300, n_poison: int = 15, seed: int = 0):
    """Clean features around their class mean; poisons sit at class 0's mean but claim class 1."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_clean) % 3
    clean = gaussian_sample(MEANS, labels, gen)
    poison = MEANS[0] + 0.5 * torch.randn(n_poison, 2, generator=gen, dtype=torch.float64)
    features = torch.cat([clean, poison])
    claimed = torch.cat([labels, torch.ones(n_poison, dtype=torch.long)])
    is_poison = torch.cat(
        [torch.zeros(n_clean, dtype=torch.bool), torch.ones(n_poison, dtype=torch.bool)]
    )
    return as_images(features, claimed, 3), is_poison


def test_planted_poisons_score_high():
    data, is_poison = planted()
    detector = build_detector("lgm-likelihood").fit(Evidence(data, feature_network(MEANS)))
    metrics = evaluate_detection(detector.result, is_poison)
    assert metrics.auroc >= 0.99
    assert metrics.tpr == 1.0  # every poison is > 4σ from its claimed mean
    assert detector.result.extras["feature_dim"] == 2


def test_no_poison_flags_about_alpha():
    """Clean data from the model's Gaussians: about alpha of it is flagged, within four binomial
    standard deviations (3,000 samples, so that alpha = 0.001's 3 flags fall outside)."""
    data, _ = planted(n_clean=3000, n_poison=0, seed=1)
    alpha = 0.01
    result = LGMLikelihood(alpha=alpha).fit(Evidence(data, feature_network(MEANS))).result
    assert torch.isfinite(result.scores).all()
    expected, sigma = alpha * len(data), math.sqrt(len(data) * alpha * (1 - alpha))
    assert abs(int(result.flagged.sum()) - expected) < 4 * sigma  # 30 ± 22


def chi2_case(covariance: str, spread: float = 1.0, n: int = 20_000):
    """Data drawn from the model's class Gaussians (features scaled by ``spread``), and the net."""
    gen = torch.Generator().manual_seed(2)
    d, k = 4, 3
    means = torch.randn(k, d, generator=gen) * 3
    log_var = torch.log(torch.rand(k, d, generator=gen) + 0.3) if covariance == "diagonal" else None
    std = (
        torch.ones(k, d, dtype=torch.float64) if log_var is None else (0.5 * log_var).exp().double()
    )
    labels = torch.arange(n) % k
    features = gaussian_sample(means, labels, gen, spread * std)
    inside = (features.abs() < RANGE).all(1)  # the pixel range clips the far tails
    return as_images(features[inside], labels[inside], k), feature_network(means, log_var=log_var)


@pytest.mark.parametrize("scale", ["robust", "model"])
@pytest.mark.parametrize("covariance", ["identity", "diagonal"])
def test_chi2_rule_hits_nominal_false_positive_rate(covariance, scale):
    alpha = 0.01
    data, net = chi2_case(covariance)
    result = LGMLikelihood(alpha=alpha, scale=scale).fit(Evidence(data, net)).result
    rate = float(result.flagged.double().mean())
    sigma = math.sqrt(alpha * (1 - alpha) / len(data))
    assert abs(rate - alpha) < 4 * sigma


def test_robust_scale_follows_the_real_spread():
    """Features 5× tighter than the model says: only the robust rule keeps its nominal rate."""
    alpha = 0.01
    data, net = chi2_case("identity", spread=0.2, n=6000)
    robust = LGMLikelihood(alpha=alpha).fit(Evidence(data, net)).result
    literal = LGMLikelihood(alpha=alpha, scale="model").fit(Evidence(data, net)).result
    sigma = math.sqrt(alpha * (1 - alpha) / len(data))
    assert abs(float(robust.flagged.double().mean()) - alpha) < 4 * sigma
    assert int(literal.flagged.sum()) == 0
    assert robust.extras["class_spread"] == pytest.approx([0.04] * 3, rel=0.1)


def test_scores_match_scipy_oracle():
    gen = torch.Generator().manual_seed(3)
    means = torch.tensor([[1.0, -2.0, 0.5], [-3.0, 2.0, 1.0]])
    log_var = torch.tensor([[0.2, -0.5, 0.1], [0.0, 0.4, -0.3]])
    labels = torch.arange(50) % 2
    data = as_images(gaussian_sample(means, labels, gen), labels, 2)
    result = LGMLikelihood().fit(Evidence(data, feature_network(means, log_var=log_var))).result
    features = data.images.flatten(1).double() * 2 * RANGE - RANGE
    oracle = np.array(
        [
            -multivariate_normal(means[y].numpy(), np.diag(log_var[y].exp().numpy())).logpdf(f)
            for f, y in zip(features.numpy(), labels.tolist(), strict=True)
        ]
    )
    np.testing.assert_allclose(result.scores.numpy(), oracle, rtol=1e-5, atol=1e-5)


def test_chi2_helpers_agree_with_scipy():
    from scipy.stats import chi2

    values = torch.tensor([0.1, 1.0, 5.0, 20.0], dtype=torch.float64)
    np.testing.assert_allclose(chi2_sf(values, 3).numpy(), chi2.sf(values.numpy(), 3), rtol=1e-10)
    assert chi2_critical(0.001, 2) == pytest.approx(-2 * math.log(0.001))


def test_reference_from_holdout_and_target_fpr():
    data, is_poison = planted(seed=4)
    holdout, _ = planted(n_clean=300, n_poison=0, seed=5)
    evidence = Evidence(data, feature_network(MEANS), holdout=holdout)
    result = LGMLikelihood(threshold=TargetFPR(0.05)).fit(evidence).result
    assert result.threshold["rule"] == "target-fpr"
    assert bool(result.flagged[is_poison].all())
    assert float(result.flagged[~is_poison].double().mean()) < 0.15
    no_holdout = LGMLikelihood(threshold=TargetFPR(0.05))
    with pytest.raises(ConfigError, match="held-out"):
        no_holdout.fit(Evidence(data, feature_network(MEANS)))


def test_classes_restrict_analysis():
    data, _ = planted(seed=6)
    result = LGMLikelihood(classes=[1]).fit(Evidence(data, feature_network(MEANS))).result
    assert bool(torch.isnan(result.scores[data.labels != 1]).all())
    assert bool(torch.isfinite(result.scores[data.labels == 1]).all())
    assert not bool(result.flagged[data.labels != 1].any())


def test_refuses_softmax_model_and_bad_alpha():
    data, _ = planted(seed=7)
    with pytest.raises(ConfigError, match="LGM"):
        LGMLikelihood().fit(Evidence(data, feature_network(MEANS, head="softmax")))
    with pytest.raises(ConfigError, match="alpha"):
        LGMLikelihood(alpha=1.5)
    with pytest.raises(ConfigError, match="scale"):
        LGMLikelihood(scale="unit")


def collision_set(seed: int = 8) -> PoisonedDataset:
    """A feature-collision-like set: 40 poisons at a class-0 target's features, claiming class 1."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(240) % 3
    clean = gaussian_sample(MEANS, labels, gen)
    target = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    poison = target + 0.05 * torch.randn(40, 2, generator=gen, dtype=torch.float64)
    features = torch.cat([clean, poison])
    claimed = torch.cat([labels, torch.ones(40, dtype=torch.long)])
    is_poison = torch.arange(len(claimed)) >= len(labels)
    data = as_images(features, claimed, 3)
    return PoisonedDataset(
        dataset=data,
        is_poison=is_poison,
        original_labels=claimed,
        source_index=torch.arange(len(claimed)),
        source_ids=data.ids,
        attack="feature-collision",
        targets=as_images(target, torch.tensor([0]), 3),
        target_labels=torch.tensor([1]),
    )


def test_filter_loop_removes_poisons_and_leaves_model_unchanged():
    poisoned = collision_set()
    model = feature_network(MEANS).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=8, batch_size=64, lr=0.1, val_fraction=0.0, patience=None)
    labels = torch.arange(90) % 3
    test = as_images(gaussian_sample(MEANS, labels, torch.Generator().manual_seed(9)), labels, 3)
    report = filter_and_finetune(model, poisoned, test=test, train_config=config, device="cpu")
    assert model.training  # mode restored, weights untouched
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert report.n_poison_removed == report.n_poison == 40
    assert report.n_clean_removed <= 5
    assert report.metrics.auroc >= 0.99
    assert report.success_before == 0.0
    assert report.success_with_filter == 0.0
    assert report.success_without_filter == 1.0  # the attack works when nothing is filtered
    assert report.clean_accuracy_with_filter >= 0.9
    fpr, tpr = report.clean_positive_roc()  # Yaseen et al.'s view: clean positive
    assert fpr[0] == 0.0 and tpr[-1] == 1.0 and bool(np.all(np.diff(fpr) >= 0))
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(report.metrics.auroc)
    assert report.to_dict()["n_kept"] == len(poisoned.dataset) - 40 - report.n_clean_removed


def test_attack_success_measures_targets_or_triggered_set():
    poisoned = collision_set()
    model = feature_network(MEANS)
    rate, measure = attack_success(model, poisoned)
    assert rate == 0.0 and "base class" in measure  # the target sits nearest class 0's mean
    labels = torch.tensor([0, 1, 2, 1])
    features = MEANS[torch.tensor([0, 1, 2, 2])].double()  # the last is "triggered" into class 2
    backdoor = PoisonedDataset(
        dataset=poisoned.dataset,
        is_poison=poisoned.is_poison,
        original_labels=poisoned.original_labels,
        source_index=poisoned.source_index,
        source_ids=poisoned.source_ids,
        attack="badnets",
        test_set=as_images(features, labels, 3),
    )
    assert attack_success(model, backdoor) == (0.75, "attack success rate")
    neither = PoisonedDataset(
        dataset=poisoned.dataset,
        is_poison=poisoned.is_poison,
        original_labels=poisoned.original_labels,
        source_index=poisoned.source_index,
        source_ids=poisoned.source_ids,
        attack="none",
    )
    with pytest.raises(DataError, match="cannot be measured"):
        attack_success(model, neither)
