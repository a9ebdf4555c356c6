"""Raw-pixel clustering baseline: no model needed, planted pixel triggers, clean data, real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.defenses import build_detector
from poisonlab.defenses.raw_clustering import RawClustering
from poisonlab.metrics.detection import evaluate_detection
from tests.defenses.conftest import RealCase, make_case


@pytest.mark.parametrize(("reduce", "floor"), [("pca", 0.95), ("fastica", 0.85)])
def test_visible_trigger_is_found_without_a_model(reduce: str, floor: float) -> None:
    case = make_case(n_per_class=80, poison_fraction=0.2, with_model=False)
    result = RawClustering(reduce=reduce, threshold="paper").fit(case.evidence).result
    metrics = evaluate_detection(result, case.is_poison)
    assert metrics.auroc >= floor
    assert metrics.tpr >= (0.9 if reduce == "pca" else 0.6)


def test_reads_pixels_not_features() -> None:
    """Planted features are ignored: scrambling them changes nothing."""
    case = make_case()
    first = RawClustering(threshold="paper").fit(case.evidence).result.scores
    case.evidence.put(("activations", "body", "data", False), torch.zeros_like(case.features))
    assert torch.equal(RawClustering(threshold="paper").fit(case.evidence).result.scores, first)
    assert ("pixels", "data") in case.evidence._cache


def test_clean_images_with_relative_size_rule() -> None:
    case = make_case(n_per_class=100, poison_fraction=0.0, with_model=False)
    result = RawClustering(rule="relative-size", threshold="paper").fit(case.evidence).result
    assert torch.isfinite(result.scores).all()
    assert result.flagged.float().mean() <= 0.35


def test_images_smaller_than_the_components_are_not_reduced() -> None:
    case = make_case(with_model=False)
    result = (
        build_detector("raw-clustering", n_components=100, threshold="paper")
        .fit(case.evidence)
        .result
    )
    assert torch.isfinite(result.scores).all()
    assert evaluate_detection(result, case.is_poison).auroc >= 0.95


def test_real_digits_with_a_large_trigger(digits_backdoor: RealCase) -> None:
    """A white 3×3 square on 8×8 digits is a dominant pixel direction: the baseline finds it."""
    evidence = digits_backdoor.evidence_factory()
    result = RawClustering(classes=[digits_backdoor.target], threshold="paper").fit(evidence).result
    assert evaluate_detection(result, digits_backdoor.is_poison).auroc >= 0.95


def test_fastica_survives_a_constant_first_pixel() -> None:
    """scikit-learn's FastICA signs components by the first feature; a constant one gave NaN."""
    from poisonlab.defenses.two_means import reduce_dimensions

    # The size of one Fashion-MNIST class (plain FastICA returns NaN on exactly this input).
    x = torch.rand(800, 784, generator=torch.Generator().manual_seed(0)).double().numpy()
    x[:, 0] = 0.0  # an always-black corner pixel, as in Fashion-MNIST's coat class
    _, z = reduce_dimensions(x, "fastica", 5, random_state=0)
    assert z.shape == (800, 5)
    assert np.isfinite(z).all()
