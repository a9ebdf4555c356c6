"""DeepFeatures (Subedar et al. 2019): Gaussian numerics against scipy/sklearn oracles, planted
poisons, clean data, maximum-likelihood classification, and the fit/reference split of the held-out
set.

Activations are synthetic Gaussians put into the Evidence cache under the keys
``Evidence.activations`` reads, so no network is needed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.deep_features import (
    DeepFeatures,
    classify_max_likelihood,
    fit_deep_features,
)
from poisonlab.defenses.gaussian import (
    fit_class_gaussians,
    gaussian_log_likelihood,
    mahalanobis_sq,
)
from poisonlab.errors import ConfigError
from poisonlab.metrics.detection import evaluate_detection

LAYERS = ("conv", "dense", "penultimate")
DIMS = (6, 12, 5)
K = 4


def class_parameters(seed: int = 0):
    """Per layer: class means (K, D) and covariance factors (K, D, D)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for d in DIMS:
        means = 3.0 * torch.randn(K, d, generator=gen, dtype=torch.float64)
        factors = torch.randn(K, d, d, generator=gen, dtype=torch.float64) / d**0.5
        params.append((means, factors + 0.5 * torch.eye(d, dtype=torch.float64)))
    return params


def draw(params, classes: torch.Tensor, gen: torch.Generator, shift: float = 0.0):
    """Activations of samples whose features come from ``classes``, plus ``shift`` in the last layer."""
    out = []
    for layer, (means, factors) in enumerate(params):
        noise = torch.randn(len(classes), means.shape[1], 1, generator=gen, dtype=torch.float64)
        acts = means[classes] + (factors[classes] @ noise).squeeze(2)
        if layer == len(params) - 1:
            acts = acts + shift
        out.append(acts.float())
    return out


def dummy_images(labels: torch.Tensor) -> ImageDataset:
    return ImageDataset(torch.zeros(len(labels), 1, 2, 2), labels.long(), K, name="synthetic")


def make_evidence(params, true, claimed, holdout_labels, gen, shift=None) -> Evidence:
    """Evidence with synthetic activations for data (true classes, claimed labels) and holdout."""
    data_acts = draw(params, true, gen)
    if shift is not None:
        moved = draw(params, true, gen, shift=6.0)
        data_acts = [
            torch.where(shift[:, None], m, a) for a, m in zip(data_acts, moved, strict=True)
        ]
    evidence = Evidence(dummy_images(claimed), None, holdout=dummy_images(holdout_labels))
    for name, acts, held in zip(LAYERS, data_acts, draw(params, holdout_labels, gen), strict=True):
        evidence.put(("activations", name, "data", True), acts)
        evidence.put(("activations", name, "holdout", True), held)
    return evidence


def backdoor_evidence(
    seed: int = 0, n: int = 800, n_poison: int = 80
) -> tuple[Evidence, torch.Tensor]:
    """BadNets-like: poisons keep their true class's early features, carry a shifted last layer,
    and claim the next class (all-to-all)."""
    gen = torch.Generator().manual_seed(seed + 100)
    true = torch.arange(n) % K
    is_poison = torch.zeros(n, dtype=torch.bool)
    is_poison[torch.randperm(n, generator=gen)[:n_poison]] = True
    claimed = torch.where(is_poison, (true + 1) % K, true)
    evidence = make_evidence(
        class_parameters(seed), true, claimed, torch.arange(400) % K, gen, shift=is_poison
    )
    return evidence, is_poison


def test_log_likelihood_matches_scipy():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(90, 7, generator=gen, dtype=torch.float64)
    labels = torch.arange(90) % 3
    x[labels == 2] *= 3.0
    gaussians = fit_class_gaussians(x, labels, 3)
    ll = gaussian_log_likelihood(x, gaussians)
    for k in range(3):
        rows = x[labels == k].numpy()
        cov = np.cov(rows, rowvar=False)
        cov += 1e-6 * np.trace(cov) / 7 * np.eye(7)
        oracle = multivariate_normal(rows.mean(0), cov).logpdf(x.numpy())
        np.testing.assert_allclose(ll[:, k].numpy(), oracle, rtol=1e-9, atol=1e-8)
        inverse = np.linalg.inv(cov)
        diff = x.numpy() - rows.mean(0)
        maha = np.einsum("nd,de,ne->n", diff, inverse, diff)
        np.testing.assert_allclose(mahalanobis_sq(x, gaussians)[:, k].numpy(), maha, rtol=1e-8)


def test_ledoit_wolf_matches_sklearn():
    from sklearn.covariance import LedoitWolf

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 10, generator=gen, dtype=torch.float64)
    labels = torch.zeros(40, dtype=torch.long)
    gaussians = fit_class_gaussians(x, labels, 1, covariance="ledoit-wolf")
    expected = LedoitWolf().fit(x.numpy()).covariance_
    expected += gaussians.jitter[0].item() * np.eye(10)
    tril = gaussians.scale_tril[0]
    np.testing.assert_allclose((tril @ tril.T).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_singular_covariance_stays_finite():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 30, generator=gen)  # fewer samples than dimensions
    x[:, :5] = 0.0  # dead units
    labels = torch.arange(12) % 2
    gaussians = fit_class_gaussians(x, labels, 3)
    ll = gaussian_log_likelihood(torch.randn(5, 30, generator=gen), gaussians)
    assert torch.isfinite(ll[:, :2]).all()
    assert torch.isneginf(ll[:, 2]).all()  # class 2 had no samples
    assert ll.dtype == torch.float64


@pytest.mark.parametrize("fusion", ["claimed", "max"])
def test_planted_backdoor_scores_high(fusion):
    evidence, is_poison = backdoor_evidence()
    detector = build_detector("deep-features", layers=LAYERS, fusion=fusion).fit(evidence)
    metrics = evaluate_detection(detector.result, is_poison)
    assert metrics.auroc >= 0.99
    assert metrics.tpr >= 0.9
    assert metrics.fpr <= 0.05


def test_ledoit_wolf_covariance_reaches_the_fit():
    """covariance="ledoit-wolf" shrinks every class covariance (other scores than "full") and
    still finds the planted backdoor."""
    evidence, is_poison = backdoor_evidence()
    full = DeepFeatures(layers=LAYERS).fit(evidence).result
    shrunk = DeepFeatures(layers=LAYERS, covariance="ledoit-wolf").fit(evidence).result
    assert shrunk.params["covariance"] == "ledoit-wolf"
    assert not torch.allclose(shrunk.scores, full.scores, rtol=1e-3)
    assert evaluate_detection(shrunk, is_poison).auroc >= 0.99


def test_score_is_minus_the_sum_of_z_normalised_claimed_log_likelihoods():
    """u(x) = −Σ_l (LL_{l,y}(x) − mean_l) / std_l, mean and std over the held-out fit half."""
    from poisonlab.data import split_indices

    evidence, _ = backdoor_evidence()
    detector = DeepFeatures(layers=LAYERS)
    result = detector.fit(evidence).result
    held_labels = evidence.labels("holdout")
    fit_idx, _ = split_indices(held_labels, (0.5, 0.5), detector.seed)

    def claimed(part: str, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        acts = [evidence.activations(name, part)[rows] for name in LAYERS]
        ll = detector.model_.log_likelihoods(acts)  # (L, N, K)
        return ll[:, torch.arange(len(rows)), labels]

    fit = claimed("holdout", fit_idx, held_labels[fit_idx])
    data_labels = evidence.labels("data")
    m = claimed("data", torch.arange(len(data_labels)), data_labels)
    expected = -((m - fit.mean(1, keepdim=True)) / fit.std(1, keepdim=True)).sum(0)
    torch.testing.assert_close(result.scores, expected, rtol=1e-9, atol=1e-9)


def test_eps_is_the_relative_regulariser_of_every_class_covariance():
    """eps=1e-2 adds 1e4 times the default 1e-6 to every (well-conditioned) class covariance."""
    evidence, _ = backdoor_evidence()
    default = DeepFeatures(layers=LAYERS).fit(evidence).model_
    larger = DeepFeatures(layers=LAYERS, eps=1e-2).fit(evidence).model_
    for small, large in zip(default.densities, larger.densities, strict=True):
        torch.testing.assert_close(large.jitter, 1e4 * small.jitter, rtol=1e-9, atol=0)


def test_claimed_fusion_catches_pure_label_flips():
    gen = torch.Generator().manual_seed(4)
    true = torch.arange(600) % K
    flipped = torch.arange(600) % 10 == 0
    claimed = torch.where(flipped, (true + 1) % K, true)
    evidence = make_evidence(class_parameters(4), true, claimed, torch.arange(400) % K, gen)
    claimed_auroc = evaluate_detection(
        DeepFeatures(layers=LAYERS).fit(evidence).result, flipped
    ).auroc
    max_auroc = evaluate_detection(
        DeepFeatures(layers=LAYERS, fusion="max").fit(evidence).result, flipped
    ).auroc
    assert claimed_auroc >= 0.99
    assert max_auroc < 0.75  # features are those of a real class: max-likelihood cannot tell


def test_no_poison_flags_about_rule_fpr():
    gen = torch.Generator().manual_seed(5)
    labels = torch.arange(1200) % K
    evidence = make_evidence(class_parameters(5), labels, labels, torch.arange(800) % K, gen)
    detector = DeepFeatures(layers=LAYERS, rule_fpr=0.02)
    result = detector.fit(evidence).result
    assert torch.isfinite(result.scores).all()
    assert float(result.flagged.double().mean()) <= 0.06
    extras = result.extras
    # the rule cuts at the 98th percentile of the clean reference scores
    reference = detector._score(evidence).reference
    assert reference is not None
    assert extras["rule_cutoff"] == pytest.approx(float(torch.quantile(reference, 0.98)))
    assert torch.equal(result.flagged, result.scores > extras["rule_cutoff"])
    assert extras["fit_samples"] + extras["reference_samples"] == 800
    assert extras["df_accuracy_reference"] >= 0.95


def test_reference_is_the_unfitted_half():
    evidence, _ = backdoor_evidence(seed=6)
    detector = DeepFeatures(layers=LAYERS, fit_fraction=0.25)
    scored = detector._score(evidence)
    assert scored.reference is not None and len(scored.reference) == 300
    # the seed draws the split: another seed, another reference half
    other = DeepFeatures(layers=LAYERS, fit_fraction=0.25, seed=1)._score(evidence).reference
    assert other is not None
    assert not torch.equal(other.sort().values, scored.reference.sort().values)
    # in-sample (fitted) samples look more likely than the unseen clean reference half
    fitted = detector.model_
    held = [evidence.activations(name, "holdout") for name in LAYERS]
    in_sample = fitted.scores(held, evidence.labels("holdout"))
    assert float(scored.reference.median()) > float(in_sample.median())


def test_max_likelihood_classification_on_separable_data():
    gen = torch.Generator().manual_seed(7)
    params = class_parameters(7)
    train_labels = torch.arange(400) % K
    test_labels = torch.arange(200) % K
    model = fit_deep_features(draw(params, train_labels, gen), train_labels, K)
    predicted = model.classify(draw(params, test_labels, gen))
    assert float((predicted == test_labels).double().mean()) >= 0.98
    # one layer's (N, K) log-likelihoods: the most likely class of that layer alone
    one_layer = model.log_likelihoods(draw(params, test_labels, gen))[0]
    single = classify_max_likelihood(one_layer)
    assert torch.equal(single, one_layer.argmax(1))
    assert float((single == test_labels).double().mean()) >= 0.98


def test_holdout_missing_a_class_is_refused():
    gen = torch.Generator().manual_seed(8)
    labels = torch.arange(100) % K
    evidence = make_evidence(class_parameters(8), labels, labels, torch.arange(100) % 3, gen)
    with pytest.raises(ConfigError, match="class 3"):
        DeepFeatures(layers=LAYERS).fit(evidence)


def test_holdout_with_one_sample_of_a_class_is_refused_in_the_singular():
    gen = torch.Generator().manual_seed(8)
    labels = torch.arange(100) % K
    holdout = torch.arange(100) % 3
    holdout[0] = 3
    evidence = make_evidence(class_parameters(8), labels, labels, holdout, gen)
    with pytest.raises(ConfigError, match="the held-out set has 1 sample of class 3;"):
        DeepFeatures(layers=LAYERS).fit(evidence)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"covariance": "diag"},
        {"fusion": "mean"},
        {"fit_fraction": 1.0},
        {"rule_fpr": 0},
        {"layers": []},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ConfigError):
        DeepFeatures(**kwargs)
