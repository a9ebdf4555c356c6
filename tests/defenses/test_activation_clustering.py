"""Activation Clustering: planted poisons, the score's properties, the cluster rules,
exclusionary reclassification, and a real backdoored model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poisonlab.defenses import Contamination, build_detector
from poisonlab.defenses.activation_clustering import (
    ActivationClustering,
    reclassification_verdict,
)
from poisonlab.defenses.two_means import (
    AXIS_FRACTIONS,
    SplitSilhouettes,
    axis_spread,
    axis_starts,
    cluster_is_suspect,
    reduce_dimensions,
    separation_scores,
    silhouette,
    split_two_means,
)
from poisonlab.metrics.detection import evaluate_detection
from tests.defenses.conftest import RealCase, make_case, plant_features


@pytest.mark.parametrize(
    ("reduce", "n_components", "auroc_floor", "tpr_floor"),
    [
        ("pca", 10, 0.97, 0.9),
        ("pca", 3, 0.97, 0.9),
        ("none", 10, 0.97, 0.9),
        ("fastica", 10, 0.9, 0.6),  # ICA is the weaker
    ],
)
def test_planted_poisons_are_found(
    reduce: str, n_components: int, auroc_floor: float, tpr_floor: float
) -> None:
    case = make_case(n_per_class=80)
    detector = ActivationClustering(reduce=reduce, n_components=n_components, threshold="paper")
    result = detector.fit(case.evidence).result
    metrics = evaluate_detection(result, case.is_poison)
    assert metrics.auroc >= auroc_floor
    assert metrics.tpr >= tpr_floor
    if reduce == "fastica":
        return
    # the split was made in the space asked for: its silhouette there, by hand (PCA and no
    # reduction are deterministic; the flags are the smaller cluster under the paper's rule)
    for c in range(3):
        members = case.labels == c
        _, z = reduce_dimensions(case.features[members].double().numpy(), reduce, n_components, 0)
        by_hand = silhouette(z, result.flagged[members].numpy(), 0)
        assert result.extras["classes"][str(c)]["silhouette"] == pytest.approx(by_hand, abs=1e-4)


def test_smaller_rule_flags_exactly_the_positive_scores() -> None:
    case = make_case()
    result = ActivationClustering(threshold="paper").fit(case.evidence).result
    assert torch.equal(result.flagged, result.scores > 0)


def test_poisoned_class_outranks_clean_classes() -> None:
    """Scores are comparable across classes: a separated poison cluster in one class scores
    above (nearly) every sample of two clean classes that k-means merely cuts in half."""
    case = make_case(n_per_class=100, poisoned_classes=(0,), poison_fraction=0.15)
    result = ActivationClustering(threshold="paper").fit(case.evidence).result
    assert evaluate_detection(result, case.is_poison).auroc >= 0.99
    clean_classes = case.labels != 0
    above = result.scores[case.is_poison] > result.scores[clean_classes].max()
    assert above.float().mean() >= 0.9
    report = result.extras["classes"]
    assert report["0"]["separation"] > 2 * max(report["1"]["separation"], report["2"]["separation"])


def test_scores_do_not_depend_on_the_scale_of_the_features() -> None:
    case = make_case()
    base = ActivationClustering(reduce="none", threshold="paper").fit(case.evidence).result.scores
    plant_features(case.evidence, 1000.0 * case.features)
    scaled = ActivationClustering(reduce="none", threshold="paper").fit(case.evidence).result.scores
    torch.testing.assert_close(base, scaled, rtol=1e-5, atol=1e-5)  # float32 features


def test_separation_score_by_hand() -> None:
    """1-d clusters {0, 1} and {9, 10, 11}: known centroids, σ and scores."""
    z = np.array([[0.0], [1.0], [9.0], [10.0], [11.0]])
    small = np.array([True, True, False, False, False])
    centroids = np.array([[10.0], [0.5]])
    # deviations along the axis: ±0.5 (small), -1, 0, 1 (large) → σ = sqrt((0.25·2 + 2)/5)
    sigma = axis_spread(z, small, centroids)
    assert sigma == pytest.approx(np.sqrt(2.5 / 5))
    scores = separation_scores(z, centroids, sigma)
    assert scores[0] == pytest.approx((10.0 - 0.5) / sigma)
    assert scores[3] == pytest.approx(-9.5 / sigma)
    assert np.all(np.abs(scores) <= 9.5 / sigma + 1e-12)


def test_split_matches_sklearn_kmeans_partition() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (70, 5)), rng.normal(6, 1, (30, 5))])
    split = split_two_means(
        x, reduce="none", n_components=10, n_init=5, random_state=0, select="inertia"
    )
    assert split is not None
    from sklearn.cluster import KMeans

    labels = KMeans(2, n_init=5, random_state=0).fit_predict(x)
    minority = labels == np.argmin(np.bincount(labels))
    assert np.array_equal(split.small, minority)
    assert split.small_fraction == pytest.approx(0.3)


@pytest.mark.parametrize("n", [7, 300, 2600])  # 2600 > SILHOUETTE_SAMPLES: the same subsample
def test_split_silhouettes_equal_sklearn_silhouette_score(n: int) -> None:
    rng = np.random.default_rng(n)
    z = rng.normal(0, 1, (n, 4))
    z[: n // 5] += 3.0
    silhouettes = SplitSilhouettes(z, random_state=11)
    splits = [np.arange(n) < n // 5, z[:, 1] > 0.5, np.arange(n) % 3 == 0]
    for small in splits:
        assert silhouettes(small) == pytest.approx(silhouette(z, small, 11), rel=1e-10, abs=1e-12)
    one = np.zeros(n, dtype=bool)  # one cluster only: worst silhouette, never kept
    one[np.setdiff1d(np.arange(n), silhouettes.index)[:1] if n > 2000 else []] = True
    assert silhouettes(one) == -1.0


def test_silhouette_selection_finds_a_compact_cluster_that_inertia_misses() -> None:
    """A clean class stretched along one axis and a tight poison cluster off to the side: the
    lowest-inertia split halves the long axis; the highest-silhouette restart isolates the poisons."""
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(200, 5)) * np.array([4.0, 1.0, 1.0, 1.0, 1.0])
    poison = rng.normal(scale=0.3, size=(30, 5)) + np.array([0.0, 8.0, 0.0, 0.0, 0.0])
    x, truth = np.vstack([clean, poison]), np.r_[np.zeros(200, bool), np.ones(30, bool)]
    kwargs = {"reduce": "none", "n_components": 10, "n_init": 10, "random_state": 0}
    by_silhouette = split_two_means(x, select="silhouette", **kwargs)
    by_inertia = split_two_means(x, select="inertia", **kwargs)
    assert by_silhouette is not None and by_inertia is not None
    assert np.array_equal(by_silhouette.small, truth)
    assert not (by_inertia.small & truth).any()
    assert by_silhouette.silhouette > by_inertia.silhouette


def test_the_detector_selects_restarts_as_asked() -> None:
    """The same stretched class with a compact poison group, planted as class 0's features:
    select="silhouette" flags the group, select="inertia" half of the long axis instead."""
    case = make_case(n_per_class=200, poisoned_classes=(0,), poison_fraction=0.13)
    rng = np.random.default_rng(0)
    features = case.features.clone().double()
    clean, poison = (case.labels == 0) & ~case.is_poison, case.is_poison
    stretch, offset = np.ones(features.shape[1]), np.zeros(features.shape[1])
    stretch[0], offset[1] = 4.0, 8.0
    features[clean] = torch.from_numpy(rng.normal(size=(int(clean.sum()), len(stretch))) * stretch)
    features[poison] = torch.from_numpy(
        rng.normal(scale=0.3, size=(int(poison.sum()), len(offset))) + offset
    )
    plant_features(case.evidence, features)
    kwargs = {"reduce": "none", "axis_splits": 0, "n_init": 10, "threshold": "paper"}
    flagged = {
        select: ActivationClustering(select=select, **kwargs).fit(case.evidence).result.flagged
        for select in ("silhouette", "inertia")
    }
    in_class = case.labels == 0
    assert torch.equal(flagged["silhouette"][in_class], poison[in_class])
    assert not (flagged["inertia"] & poison).any() and flagged["inertia"][in_class].sum() > 60


@pytest.mark.parametrize("seed", [0, 4, 5])
def test_axis_starts_find_a_tenth_of_the_class_that_kmeans_pp_restarts_miss(seed: int) -> None:
    """A clean class wide along one axis and a poison group of 10% six clean standard deviations
    out along another: every k-means++ restart cuts the wide clean axis (the group lands in both
    halves); starts at cuts of the principal axes converge to the group, whose split has the
    higher silhouette."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(270, 10)) * np.array([3.0] + [1.0] * 9)
    poison = rng.normal(scale=0.7, size=(30, 10)) + np.array([0.0, 6.0] + [0.0] * 8)
    x, truth = np.vstack([clean, poison]), np.r_[np.zeros(270, bool), np.ones(30, bool)]
    kwargs = {"reduce": "none", "n_components": 10, "n_init": 10, "random_state": 0}
    restarts_only = split_two_means(x, axis_splits=0, **kwargs)
    with_axes = split_two_means(x, axis_splits=3, **kwargs)
    assert restarts_only is not None and with_axes is not None
    assert (restarts_only.small & ~truth).sum() > 100  # a balanced cut of the clean class
    assert (with_axes.small & truth).sum() == 30 and (with_axes.small & ~truth).sum() <= 1
    assert with_axes.silhouette > restarts_only.silhouette


def test_axis_starts_are_group_and_rest_centroids_along_the_leading_axes() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 4)) * np.array([5.0, 2.0, 1.0, 0.5])
    starts = axis_starts(z, 2)
    assert len(starts) == 2 * 2 * len(AXIS_FRACTIONS)
    assert all(s.shape == (2, 4) for s in starts)
    # the first start: the top 5% along the widest axis (x0) against the rest
    top = np.argsort(z[:, 0] - z[:, 0].mean())[::-1][:5]
    sign = np.sign(np.linalg.svd(z - z.mean(0))[2][0][0])
    if sign < 0:
        top = np.argsort(z[:, 0])[:5]
    assert np.allclose(starts[0][1], z[top].mean(axis=0))
    assert axis_starts(z, 0) == []


def test_unsplittable_classes_score_zero() -> None:
    assert (
        split_two_means(np.ones((10, 4)), reduce="pca", n_components=2, n_init=1, random_state=0)
        is None
    )
    assert (
        split_two_means(np.eye(2), reduce="pca", n_components=2, n_init=1, random_state=0) is None
    )
    case = make_case(n_per_class=2, poison_fraction=0.0)
    result = ActivationClustering(threshold="paper").fit(case.evidence).result
    assert torch.equal(result.scores, torch.zeros(len(case.labels), dtype=torch.float64))
    assert not result.flagged.any()


def test_clean_data_gives_few_flags_under_size_and_silhouette_rules() -> None:
    """Without poisons k-means still halves each class: the smaller-cluster rule flags about half
    (documented), while the relative-size and silhouette rules flag nothing when the splits come
    from k-means++ restarts alone (the papers' procedure). The principal-axis starts may find a
    small tail cut of a clean class with a higher silhouette, which these size rules then read as
    suspicious: with them, only the per-class verdict keeps a clean class clean."""
    case = make_case(n_per_class=120, poison_fraction=0.0)
    smaller = ActivationClustering(threshold="paper", axis_splits=0).fit(case.evidence).result
    assert 0.2 <= smaller.flagged.float().mean() <= 0.5
    for rule in ("relative-size", "silhouette"):
        detector = ActivationClustering(rule=rule, threshold="paper", axis_splits=0)
        result = detector.fit(case.evidence).result
        assert not result.flagged.any(), rule
        assert torch.isfinite(result.scores).all()
    report = smaller.extras["classes"]
    assert all(entry["separation"] < 4 for entry in report.values())
    verdict = ActivationClustering().fit(case.evidence).result
    assert not verdict.flagged.any() and verdict.poisoned_classes == []


def test_the_seed_draws_the_k_means_restarts() -> None:
    """A clean class has no one best halving: with one restart, seed 1 cuts it elsewhere than
    seed 0, and seed 0 again cuts it the same way."""
    case = make_case(n_per_class=120, poison_fraction=0.0)
    kwargs = {"threshold": "paper", "axis_splits": 0, "n_init": 1}
    first, again, other = (
        ActivationClustering(seed=seed, **kwargs).fit(case.evidence).result.flagged
        for seed in (0, 0, 1)
    )
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_cluster_rules() -> None:
    case = make_case(n_per_class=100, poison_fraction=0.2)
    split = split_two_means(
        case.features[case.labels == 0].double().numpy(),
        reduce="pca",
        n_components=10,
        n_init=3,
        random_state=0,
    )
    assert split is not None
    assert cluster_is_suspect(split, "smaller", 0.35, 0.1)
    assert cluster_is_suspect(split, "relative-size", 0.35, 0.1)
    assert not cluster_is_suspect(split, "relative-size", split.small_fraction, 0.1)
    assert cluster_is_suspect(split, "silhouette", 0.35, split.silhouette - 0.01)
    assert not cluster_is_suspect(split, "silhouette", 0.35, split.silhouette + 0.01)
    # the detector applies its own thresholds: the poison clusters (20% of each class,
    # silhouettes about 0.47) pass the defaults and fail a size of 10% or a silhouette of 0.9
    for rule, threshold in (("relative-size", {"size_threshold": 0.1}),
                            ("silhouette", {"silhouette_threshold": 0.9})):  # fmt: skip
        kwargs = {"rule": rule, "threshold": "paper", "axis_splits": 0}
        default = ActivationClustering(**kwargs).fit(case.evidence).result
        assert torch.equal(default.flagged, case.is_poison), rule
        stricter = ActivationClustering(**kwargs, **threshold).fit(case.evidence).result
        assert not stricter.flagged.any(), threshold


def test_contamination_threshold_ranks_across_classes() -> None:
    case = make_case(n_per_class=100, poisoned_classes=(2,), poison_fraction=0.1)
    detector = ActivationClustering(threshold=Contamination(0.03, per_class=False))
    result = detector.fit(case.evidence).result
    assert result.flagged.sum() == round(0.03 * len(case.labels))
    assert case.is_poison[result.flagged].all()


def test_reclassification_verdict_by_hand() -> None:
    predictions = torch.tensor([3, 3, 3, 1, 1, 0])  # claimed label 3: l = 3, most other = 1 (q = 2)
    assert reclassification_verdict(predictions, 3, 5, threshold=1.0) == (True, 3, 2, 1)
    assert reclassification_verdict(predictions, 3, 5, threshold=2.0) == (False, 3, 2, 1)
    only_own = torch.tensor([2, 2, 2])
    assert reclassification_verdict(only_own, 2, 4, threshold=10.0)[0]  # q = 0: legitimate


def test_exclusionary_reclassification_clears_clean_clusters() -> None:
    """Poisons only in class 0 (triggered class-2 images, labelled 0); the smaller-cluster rule
    suspects a cluster in every class; a model retrained without them reads the poisons as class 2
    and the clean clusters as their own class, so only class 0 stays suspect."""
    case = make_case(n_per_class=80, poisoned_classes=(0,), poison_fraction=0.25)
    model = case.evidence.model
    assert model is not None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    detector = ActivationClustering(ex_re_threshold=1.0, retrain_epochs=10)
    result = detector.fit(case.evidence).result
    report = result.extras["classes"]
    assert report["0"]["suspect"] and report["0"]["ex_re_source_class"] == 2
    assert not report["1"]["suspect"] and not report["2"]["suspect"]
    assert not result.flagged[case.labels != 0].any()
    assert evaluate_detection(result, case.is_poison).tpr >= 0.9
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_named_layer_and_build_detector() -> None:
    case = make_case()
    detector = build_detector(
        "activation-clustering", layer="body.relu2", n_components=5, threshold="paper"
    )
    result = detector.fit(case.evidence).result
    assert result.params["layer"] == "body.relu2"
    assert ("activations", "body.relu2", "data", True) in case.evidence._cache
    assert torch.isfinite(result.scores).all()


def test_real_backdoor_is_found(digits_backdoor: RealCase) -> None:
    """cnn-small on digits, BadNets 2 → 5 (20% of class 5): the analysed target class."""
    assert digits_backdoor.attack_success >= 0.7, "the backdoor must be learned for this test"
    target = digits_backdoor.target
    result = (
        ActivationClustering(classes=[target], threshold="paper")
        .fit(digits_backdoor.evidence_factory())
        .result
    )
    metrics = evaluate_detection(result, digits_backdoor.is_poison)
    assert metrics.n_poison > 0 and metrics.n == int(result.analysed.sum())
    assert metrics.auroc >= 0.95 and metrics.tpr >= 0.9


def test_real_clean_classes(digits_backdoor: RealCase) -> None:
    """Classes 0 and 1 hold no poison: no crash, finite scores, undefined AUROC reported as NaN,
    and the relative-size rule flags at most the size threshold's share of them."""
    evidence = digits_backdoor.evidence_factory()
    result = (
        ActivationClustering(rule="relative-size", classes=[0, 1], threshold="paper")
        .fit(evidence)
        .result
    )
    assert torch.isfinite(result.scores[result.analysed]).all()
    assert result.flagged.sum() <= 0.35 * result.analysed.sum()
    metrics = evaluate_detection(result, digits_backdoor.is_poison)
    assert metrics.n_poison == 0 and np.isnan(metrics.auroc) and metrics.notes


def test_retraining_repeats_the_recipe_the_evidence_records(monkeypatch) -> None:
    """A scan's own model was trained with a known recipe (2 epochs on a large set): the
    exclusionary retraining repeats it; without one it falls back to the default recipe."""
    from dataclasses import replace

    import poisonlab.train
    from poisonlab.defenses.activation_clustering import retrain_without
    from poisonlab.defenses.evidence import Evidence
    from poisonlab.train.config import TrainConfig
    from poisonlab.train.recipes import default_recipe

    seen: list[TrainConfig] = []
    monkeypatch.setattr(poisonlab.train, "train_model", lambda m, d, c, **k: seen.append(c))
    case = make_case(n_per_class=20)
    excluded = case.is_poison.clone()
    kept = int((~excluded).sum())
    recipe = TrainConfig(epochs=2, batch_size=32, patience=None, seed=5)
    given = Evidence(case.evidence.data, case.evidence.model, recipe=recipe)
    retrain_without(given, excluded, seed=3, epochs=None)
    retrain_without(given, excluded, seed=3, epochs=4)
    retrain_without(case.evidence, excluded, seed=3, epochs=None)
    arch = case.evidence.model.config.arch
    assert seen == [
        replace(recipe, seed=3),
        replace(recipe, seed=3, epochs=4),
        replace(default_recipe(arch, kept), seed=3),
    ]
