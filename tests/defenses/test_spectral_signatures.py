"""Spectral Signatures: an oracle for τ, the paper's removal rule, per-class scaling, the
difference from ART's uncentred projection, planted poisons and a real backdoored model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.defenses import Contamination, TargetFPR
from poisonlab.defenses.spectral_signatures import (
    SpectralSignatures,
    removal_count,
    spectral_scores,
)
from poisonlab.metrics.detection import auroc, evaluate_detection
from tests.defenses.conftest import RealCase, make_case, plant_features


def paper_tau(r: np.ndarray) -> np.ndarray:
    """Algorithm 1 of Tran et al., written out with NumPy (the oracle)."""
    m = r - r.mean(axis=0)
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    return (m @ vt[0]) ** 2


def test_tau_matches_the_paper_oracle() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 7)) @ rng.normal(size=(7, 7)) + 3.0
    tau, mean, v = spectral_scores(torch.from_numpy(r))
    np.testing.assert_allclose(tau.numpy(), paper_tau(r), rtol=1e-10)
    np.testing.assert_allclose(mean.numpy(), r.mean(axis=0))
    assert float(v.norm()) == pytest.approx(1.0)


def test_scores_are_tau_over_the_class_median() -> None:
    case = make_case()
    result = SpectralSignatures(threshold="paper").fit(case.evidence).result
    for c in range(3):
        members = case.labels == c
        tau = paper_tau(case.features[members].double().numpy())
        np.testing.assert_allclose(result.scores[members].numpy(), tau / np.median(tau), rtol=1e-8)
        assert float(result.scores[members].median()) == pytest.approx(1.0)


def test_a_named_layer_is_the_one_read() -> None:
    """layer="body.relu2": τ of that layer's (pooled) activations, not of the features."""
    case = make_case()
    result = SpectralSignatures(layer="body.relu2", threshold="paper").fit(case.evidence).result
    acts = case.evidence.activations("body.relu2")
    assert acts.shape[1] != case.features.shape[1]
    for c in range(3):
        members = case.labels == c
        tau = paper_tau(acts[members].double().numpy())
        np.testing.assert_allclose(result.scores[members].numpy(), tau / np.median(tau), rtol=1e-8)


def test_paper_rule_removes_one_and_a_half_eps_per_class() -> None:
    case = make_case(n_per_class=60)
    result = SpectralSignatures(eps=0.1, threshold="paper").fit(case.evidence).result
    for c in range(3):
        members = case.labels == c
        n = int(members.sum())
        assert int(result.flagged[members].sum()) == removal_count(n, 0.1, 1.5) == round(0.15 * n)
        kept_max = result.scores[members & ~result.flagged].max()
        assert result.scores[members & result.flagged].min() >= kept_max
    assert removal_count(10, 0.5, 1.5) == 8 and removal_count(4, 0.9, 1.5) == 4
    double = SpectralSignatures(eps=0.1, eps_multiplier=3.0, threshold="paper").fit(case.evidence)
    for c in range(3):  # another multiplier: 3·ε·n per class
        n = int((case.labels == c).sum())
        assert int(double.result.flagged[case.labels == c].sum()) == removal_count(n, 0.1, 3.0)
    assert removal_count(10, 0.05, 1.5) == 1  # 0.75 rounds half up


def test_planted_poisons_are_found() -> None:
    case = make_case(n_per_class=100, poison_fraction=0.1)
    result = SpectralSignatures(eps=0.1, threshold="paper").fit(case.evidence).result
    metrics = evaluate_detection(result, case.is_poison)
    assert metrics.auroc >= 0.97
    assert metrics.tpr >= 0.9


def test_translation_invariant_unlike_an_uncentred_projection() -> None:
    """τ is unchanged by a common offset of all representations (the paper centres them);
    ART 1.20.1's score |v · R_i| changes with it, and with a large offset it ranks poisons by
    the sign of their deviation rather than its size."""
    case = make_case(n_per_class=100, poisoned_classes=(0,), poison_fraction=0.1)
    base = SpectralSignatures(threshold="paper").fit(case.evidence).result.scores
    shifted = case.features + 50.0
    plant_features(case.evidence, shifted)
    moved = SpectralSignatures(threshold="paper").fit(case.evidence).result.scores
    torch.testing.assert_close(base, moved, rtol=1e-4, atol=1e-6)
    art = pytest.importorskip("art.defences.detector.poison.spectral_signature_defense")
    members = (case.labels == 0).numpy()
    r = shifted[case.labels == 0].double().numpy()
    art_scores = art.SpectralSignatureDefense.spectral_signature_scores(r).ravel()
    truth = case.is_poison.numpy()[members]
    ours = auroc(truth, moved.numpy()[members])
    theirs = auroc(truth, art_scores)
    assert ours >= 0.97
    m = r - r.mean(axis=0)
    v = np.linalg.svd(m, full_matrices=False)[2][0]
    assert not np.allclose(art_scores, (m @ v) ** 2)
    signed = auroc(truth, np.sign(v @ r.mean(axis=0)) * (m @ v))
    assert theirs == pytest.approx(signed)  # ART's ranking is the signed deviation's


def test_scores_comparable_across_classes() -> None:
    """Multiplying one class's representations by 100 leaves every score unchanged."""
    case = make_case()
    base = SpectralSignatures(threshold="paper").fit(case.evidence).result.scores
    scaled = case.features.clone()
    scaled[case.labels == 1] *= 100.0
    plant_features(case.evidence, scaled)
    torch.testing.assert_close(
        SpectralSignatures(threshold="paper").fit(case.evidence).result.scores,
        base,
        rtol=1e-4,
        atol=1e-6,
    )


def test_clean_data_behaves() -> None:
    """Without poisons the paper's rule still removes 1.5·ε·n per class (as documented); a
    contamination or target-FPR threshold flags what it promises, and nothing is NaN."""
    case = make_case(n_per_class=100, poison_fraction=0.0)
    paper = SpectralSignatures(eps=0.05, threshold="paper").fit(case.evidence).result
    assert torch.isfinite(paper.scores).all()
    assert int(paper.flagged.sum()) == 3 * removal_count(100, 0.05, 1.5)
    clean = SpectralSignatures(threshold=TargetFPR(0.05)).fit(case.evidence).result
    assert clean.flagged.float().mean() <= 0.2
    top = SpectralSignatures(threshold=Contamination(0.01)).fit(case.evidence).result
    assert int(top.flagged.sum()) == 3


def test_tiny_classes() -> None:
    case = make_case(n_per_class=1, poison_fraction=0.0, holdout_per_class=1)
    result = SpectralSignatures(threshold="paper").fit(case.evidence).result
    assert torch.equal(result.scores, torch.zeros(3, dtype=torch.float64))


def test_real_backdoor_is_found(digits_backdoor: RealCase) -> None:
    target = digits_backdoor.target
    evidence = digits_backdoor.evidence_factory()
    result = SpectralSignatures(eps=0.2, classes=[target], threshold="paper").fit(evidence).result
    metrics = evaluate_detection(result, digits_backdoor.is_poison)
    assert metrics.auroc >= 0.9
    assert metrics.tpr >= 0.8
