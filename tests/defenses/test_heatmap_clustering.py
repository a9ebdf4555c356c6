"""Heatmap Clustering (poisonlab.defenses.heatmap_clustering) on a small backdoored model.

The planted case: cnn-small trained on 16×16 "shapes" (a bright 5×5 square whose place gives the
class, tests/explain/test_lrp.py) plus 20 class-0 squares with a 3×3 corner trigger labelled 1.
The model learns the backdoor, so LRP puts the poisons' relevance on the square *and* the
trigger, a point cloud of a different shape than the single square every clean image of class 1
draws on (GW is blind to where the square sits, not to a second, distant blob). Class 1 is the
poisoned class, class 2 a clean one. Settings are small (32 points per cloud, one barycenter
update at ε = 0.1, N = 4) so each fit takes seconds; the full-size behaviour is measured in
bench/bench_heatmap_clustering.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence, build_detector
from poisonlab.defenses.heatmap_clustering import HeatmapClustering, auto_pool, silhouette
from poisonlab.errors import ConfigError, DataError
from poisonlab.explain.lrp import lrp_heatmaps
from poisonlab.metrics.detection import auroc
from poisonlab.models import ModelConfig, Network, build_model
from tests.defenses.conftest import fake_retraining, make_case
from tests.defenses.test_contract import assert_same_model, model_snapshot
from tests.explain.test_lrp import SIDE, shapes, stamp

#: Small GW settings: seconds per fit on a busy 2-core machine.
FAST: dict[str, Any] = {
    "max_points": 32,
    "seed_gw_max_iter": 20,
    "max_iter": 1,
    "epsilon": 0.1,
    "n_support": 4,
    "n_init": 2,
}
POISONED, CLEAN = 1, 2


@dataclass
class Planted:
    data: ImageDataset
    model: Network
    is_poison: Tensor

    def evidence(self) -> Evidence:
        return Evidence(self.data, self.model, device="cpu")


def plant(seed: int) -> Planted:
    """4 shape classes × 60 + 20 triggered class-0 squares labelled 1 (25% of class 1); ``seed``
    draws the shapes and the model's initialisation and batches."""
    from poisonlab.train import TrainConfig, predict, train_model

    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(60)
    poisons = stamp(shapes(torch.zeros(20, dtype=torch.long), generator))
    data = ImageDataset(
        torch.cat([shapes(labels, generator), poisons]),
        torch.cat([labels, torch.full((20,), POISONED)]),
        4,
        name="shapes",
    )
    is_poison = torch.cat([torch.zeros(240, dtype=torch.bool), torch.ones(20, dtype=torch.bool)])
    model = build_model(ModelConfig("cnn-small", 1, SIDE, SIDE, 4, feature_dim=32), seed=seed)
    config = TrainConfig(
        epochs=5, batch_size=32, lr=3e-3, val_fraction=0.0, patience=None, seed=seed
    )
    train_model(model, data, config, device="cpu")
    fresh = stamp(shapes(torch.zeros(30, dtype=torch.long), generator))
    assert (predict(model, fresh, device="cpu") == POISONED).float().mean() > 0.9, "no backdoor"
    return Planted(data, model, is_poison)


@pytest.fixture(scope="module")
def planted() -> Planted:
    """The planted case at seed 0."""
    return plant(0)


@pytest.fixture(scope="module")
def fitted(planted: Planted) -> HeatmapClustering:
    """The paper's rule (smaller cluster flagged), which the tests below examine."""
    detector = HeatmapClustering(classes=[POISONED, CLEAN], threshold="paper", **FAST)
    return detector.fit(planted.evidence())  # type: ignore[return-value]


def test_default_verdict_names_the_poisoned_class_and_clears_the_clean_one(
    planted: Planted,
) -> None:
    """At the default threshold each class is judged by the break test's valley form on its
    silhouettes: the poisoned class is named and loses its poisons, the clean class (which the
    paper's rule cuts in two) is judged clean and loses nothing."""
    detector = HeatmapClustering(classes=[POISONED, CLEAN], **FAST)
    result = detector.fit(planted.evidence()).result
    assert result.threshold["rule"] == "verdict"
    assert result.threshold["poisoned_classes"] == [POISONED]
    named = {v.label: v.poisoned for v in result.verdicts}
    assert named == {POISONED: True, CLEAN: False}
    members = planted.data.labels == POISONED
    flagged, truth = result.flagged[members], planted.is_poison[members]
    assert (flagged & truth).sum() >= 15 and (flagged & ~truth).sum() <= 2
    assert not result.flagged[planted.data.labels == CLEAN].any()


def test_planted_poisons_are_the_flagged_cluster(
    planted: Planted, fitted: HeatmapClustering
) -> None:
    """On the poisoned class the smaller GW cluster is the poisons and the score ranks the poisons
    above the clean members (margins as in :func:`test_planted_case_over_seeds`)."""
    result = fitted.result
    members = planted.data.labels == POISONED
    truth = planted.is_poison[members]
    assert auroc(truth.numpy(), result.scores[members].numpy()) >= 0.95
    flagged = result.flagged[members]
    assert (flagged & truth).sum() >= 15 and (flagged & ~truth).sum() <= 2
    report = result.extras["classes"][str(POISONED)]
    assert report["split"] and min(report["sizes"]) >= 15
    # the most suspicious heatmaps shown in reports are poisons, and are their heatmaps
    top = result.extras["top_heatmaps"]
    assert planted.is_poison[top["index"]].all()
    maps = fitted.heatmaps(planted.evidence(), "data", POISONED)
    row = int((planted.data.labels[: top["index"][0]] == POISONED).sum())
    assert torch.equal(torch.tensor(top["heatmaps"][0]), maps[row])
    assert torch.tensor(top["heatmaps"][0]).shape == (SIDE, SIDE)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_case_over_seeds(seed: int) -> None:
    """The planted case's floors hold for other shapes, models and k-means draws, with margins.

    Measured over 8 data/model seeds x 3 detector seeds (24 fits): AUROC 1.0 in all 24; the
    flagged cluster held 17-20 of the 20 poisons and never a clean image (seed 3: 19 of 20 in
    every fit). Floors: AUROC >= 0.95, >= 15 poisons flagged, <= 2 clean images flagged.
    """
    case = plant(seed)
    detector = HeatmapClustering(classes=[POISONED, CLEAN], seed=seed - 1, **FAST)
    result = detector.fit(case.evidence()).result
    members = case.data.labels == POISONED
    truth = case.is_poison[members]
    flagged = result.flagged[members]
    assert auroc(truth.numpy(), result.scores[members].numpy()) >= 0.95
    assert (flagged & truth).sum() >= 15 and (flagged & ~truth).sum() <= 2


def test_clean_class_is_cut_but_its_barycenters_coincide(
    planted: Planted, fitted: HeatmapClustering
) -> None:
    """No poison in the class: the paper's rule still flags its smaller k-means cluster (a
    non-empty minority, as for every k = 2 rule; use a contamination or FPR threshold, or look at
    the class report, to avoid it). What tells the classes apart is the distance between the two
    barycenters: nearly 0 for a clean class (both halves are the same single square), far larger
    for the poisoned one. The silhouette score sees it: every clean-class sample stays near 0,
    every poison outranks every clean-class sample across the two classes, and the class
    report's mean |silhouette| is several times larger for the poisoned class."""
    result = fitted.result
    clean = planted.data.labels == CLEAN
    assert torch.isfinite(result.scores[clean]).all()
    n_flagged = int(result.flagged[clean].sum())
    assert 0 < n_flagged <= int(clean.sum()) // 2
    report = result.extras["classes"]
    assert (
        report[str(CLEAN)]["gw_between_centers"] < 0.1 * report[str(POISONED)]["gw_between_centers"]
    )
    poison_scores = result.scores[planted.is_poison]
    assert poison_scores.min() > result.scores[clean].max()
    assert result.scores[clean].abs().max() < 0.5 * poison_scores.min()
    assert report[str(CLEAN)]["silhouette"] < 0.25 * report[str(POISONED)]["silhouette"]
    assert len(report[str(POISONED)]["objectives"]) == FAST["n_init"]
    # the other classes were not analysed
    others = ~(clean | (planted.data.labels == POISONED))
    assert torch.isnan(result.scores[others]).all() and not result.flagged[others].any()


def test_deterministic_and_model_left_as_it_was(
    planted: Planted, fitted: HeatmapClustering
) -> None:
    """A second fit on a fresh Evidence gives bit-identical scores and flags; LRP left the model
    exactly as it was (weights, buffers, modes, requires_grad, grads, hooks)."""
    model = planted.model
    model.train()
    model.body[0].eval()  # a mixed mode to restore
    first = next(model.parameters())
    first.requires_grad_(False)
    before = model_snapshot(model)
    try:
        detector = HeatmapClustering(classes=[POISONED, CLEAN], threshold="paper", **FAST)
        again = detector.fit(planted.evidence()).result
        after = model_snapshot(model)
    finally:
        first.requires_grad_(True)
        model.eval()
    assert_same_model(before, after)
    assert not torch.nn.modules.module._global_forward_hooks
    torch.testing.assert_close(again.scores, fitted.result.scores, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(again.flagged, fitted.result.flagged)


def test_claimed_or_predicted_class_is_explained() -> None:
    """``explain`` picks the logit LRP starts from: the claimed label or the prediction. On an
    untrained model they differ for most images, and so do the heatmaps; both are cached side by
    side in one Evidence."""
    case = make_case()
    evidence = case.evidence
    model = evidence.require_model()
    members = case.labels == 0
    x = evidence.data.images[members]
    claimed = HeatmapClustering(explain="claimed").heatmaps(evidence, "data", 0)
    predicted = HeatmapClustering(explain="predicted").heatmaps(evidence, "data", 0)
    rule = {"composite": "epsilon", "epsilon": 1e-6}  # the detector's defaults
    torch.testing.assert_close(
        claimed, lrp_heatmaps(model, x, labels=case.labels[members], explain="claimed", **rule)
    )
    torch.testing.assert_close(predicted, lrp_heatmaps(model, x, **rule))
    wrong = model(x.to(next(model.parameters()).device)).argmax(1).cpu() != 0
    assert wrong.any()
    assert not torch.allclose(claimed[wrong], predicted[wrong])
    assert torch.allclose(claimed[~wrong], predicted[~wrong])


def test_lrp_and_cloud_settings_reach_the_heatmaps_and_clouds() -> None:
    """Non-default LRP settings (composite, its ε, the class explained) make the heatmaps, and
    non-default cloud settings (mass, pool, size bound, signed relevance) the clouds."""
    from poisonlab.explain.point_cloud import heatmaps_to_clouds

    case = make_case()
    evidence = case.evidence
    members = case.labels == 0
    detector = HeatmapClustering(
        composite="epsilon-plus-flat", lrp_epsilon=0.1, explain="claimed",
        mass=0.9, pool=2, max_points=12, relevance="raw",
    )  # fmt: skip
    maps = detector.heatmaps(evidence, "data", 0)
    expected = lrp_heatmaps(
        evidence.require_model(), evidence.data.images[members], labels=case.labels[members],
        explain="claimed", composite="epsilon-plus-flat", epsilon=0.1,
    )  # fmt: skip
    torch.testing.assert_close(maps, expected)
    clouds = detector.clouds(evidence, "data", 0)
    by_hand = heatmaps_to_clouds(maps, mass=0.9, pool=2, max_points=12)
    torch.testing.assert_close(clouds.C, by_hand.C)
    torch.testing.assert_close(clouds.p, by_hand.p)


def test_gw_settings_reach_the_k_means(monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-default GW k-means settings are the ones the clustering runs with (a spy stops it
    there)."""
    import poisonlab.explain.gw_kmeans as gw_kmeans

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def spy(clouds: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(gw_kmeans, "gw_kmeans_many", spy)
    settings = {"epsilon": 0.15, "bary_epsilon": 0.2, "n_support": 3, "max_iter": 2,
                "n_init": 3, "init": "farthest", "seed_gw_max_iter": 7}  # fmt: skip
    with pytest.raises(Stop):
        HeatmapClustering(classes=[0], max_points=16, **settings).fit(make_case().evidence)
    assert {key: seen[key] for key in settings} == settings
    # the detector's seed seeds the k-means generators
    first = seen["generators"][0].initial_seed()
    with pytest.raises(Stop):
        HeatmapClustering(classes=[0], max_points=16, seed=1).fit(make_case().evidence)
    assert seen["generators"][0].initial_seed() != first


def _altered_heatmaps(monkeypatch: pytest.MonkeyPatch, rows: list[int], value: float) -> None:
    """Heatmaps of class 0 whose ``rows`` (positions among its members) are set to ``value``."""
    computed = HeatmapClustering.heatmaps

    def altered(self: HeatmapClustering, evidence: Evidence, part: Any, c: int) -> Tensor:
        maps = computed(self, evidence, part, c).clone()
        if c == 0:
            maps[rows] = value
        return maps

    monkeypatch.setattr(HeatmapClustering, "heatmaps", altered)


def test_a_non_finite_heatmap_is_refused_naming_its_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN in a heatmap (a model or LRP pass that overflowed) stops the detector with the
    sample's row in the data set and its class (a scan then reports the defense as skipped)."""
    case = make_case()
    _altered_heatmaps(monkeypatch, [3], float("nan"))
    row = int((case.labels == 0).nonzero()[3, 0])
    message = rf"^heatmap-clustering: the LRP heatmap of data sample {row} \(class 0\) holds NaN"
    with pytest.raises(DataError, match=message):
        HeatmapClustering(classes=[0], max_points=16).fit(case.evidence)


def test_all_zero_heatmaps_get_uniform_clouds_and_finite_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A heatmap without positive relevance (clamped to all zeros) cannot be normalised to mass
    1: its cloud spreads the mass uniformly over the grid (point_cloud's constant-map rule), and
    its distances and score are finite like every other sample's."""
    case = make_case()
    _altered_heatmaps(monkeypatch, [0, 5, 6], 0.0)
    detector = HeatmapClustering(classes=[0], threshold="paper", **FAST)
    result = detector.fit(case.evidence).result
    assert torch.isfinite(result.scores[case.labels == 0]).all()
    clouds = detector.clouds(case.evidence, "data", 0)
    size = int(clouds.sizes[0])
    assert size == FAST["max_points"]  # the whole grid, cut to the first points in raster order
    torch.testing.assert_close(clouds.p[0, :size], torch.full((size,), 1 / size).double())


def test_the_fused_gw_loops_are_compiled_for_float32_only(
    planted: Planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clustering computes in float32; no solve asks for the float64 compiled loops, whose
    first compilation would add ~17 s to a machine's first scan (the one-problem GW between the
    two barycenters, in the clouds' float64, takes the tensor path)."""
    pytest.importorskip("numba")
    from poisonlab.explain import _gw_fused

    dtypes: list[torch.dtype] = []
    solve = _gw_fused.solve_rows  # every fused solve goes through it

    def spy(C1: Tensor, *args: Any, **kwargs: Any) -> Any:
        dtypes.append(C1.dtype)
        return solve(C1, *args, **kwargs)

    monkeypatch.setattr(_gw_fused, "solve_rows", spy)
    HeatmapClustering(classes=[POISONED], **FAST).fit(planted.evidence())
    assert dtypes and set(dtypes) == {torch.float32}


def test_paper_rule_and_score_agree(planted: Planted, fitted: HeatmapClustering) -> None:
    """Under the paper's rule the flagged samples are exactly those with a positive score
    (nearer the small barycenter)."""
    result = fitted.result
    analysed = result.analysed
    assert torch.equal(result.flagged[analysed], result.scores[analysed] > 0)
    assert result.threshold["rule"] == "paper"


def _clean_holdout(seed: int) -> ImageDataset:
    """Fresh clean shapes of the two analysed classes (no trigger), 30 each."""
    labels = torch.tensor([POISONED, CLEAN]).repeat_interleave(30)
    images = shapes(labels, torch.Generator().manual_seed(seed))
    return ImageDataset(images, labels, 4, name="holdout")


def test_target_fpr_cuts_at_the_held_out_silhouettes(planted: Planted) -> None:
    """With ``fpr:F`` the cut is the (1 − F) quantile of clean held-out silhouettes, measured to
    the same barycenters: the poisons stand above it, and few clean training images do."""
    holdout = _clean_holdout(seed=11)
    detector = HeatmapClustering(classes=[POISONED, CLEAN], threshold="fpr:0.1", **FAST)
    result = detector.fit(
        Evidence(planted.data, planted.model, holdout=holdout, device="cpu")
    ).result
    assert result.threshold["rule"] == "target-fpr"
    cut = result.threshold["cutoff"]
    assert -1.0 <= cut < 1.0
    truth = planted.is_poison
    assert (result.flagged & truth).sum() >= 15
    clean_analysed = result.analysed & ~truth
    assert (result.flagged & clean_analysed).float().sum() <= 0.2 * clean_analysed.sum()


def test_held_out_set_is_not_scored_for_a_verdict(
    planted: Planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a target-FPR threshold reads the held-out silhouettes: under the default verdict
    the held-out images get no heatmap and no GW solve, and the result is the one without them."""
    parts: list[str] = []
    clouds = HeatmapClustering.clouds

    def spy(self: HeatmapClustering, evidence: Evidence, part: Any, c: int) -> Any:
        parts.append(part)
        return clouds(self, evidence, part, c)

    monkeypatch.setattr(HeatmapClustering, "clouds", spy)
    detector = HeatmapClustering(classes=[POISONED, CLEAN], **FAST)
    with_holdout = detector.fit(
        Evidence(planted.data, planted.model, holdout=_clean_holdout(seed=11), device="cpu")
    ).result
    assert "holdout" not in parts and "data" in parts
    without = HeatmapClustering(classes=[POISONED, CLEAN], **FAST).fit(planted.evidence()).result
    assert torch.equal(with_holdout.scores.nan_to_num(-9), without.scores.nan_to_num(-9))
    assert torch.equal(with_holdout.flagged, without.flagged)


def test_auto_pool_and_silhouette() -> None:
    assert [auto_pool(s, s) for s in (8, 16, 28, 32, 64)] == [1, 1, 2, 2, 4]
    d_large = torch.tensor([4.0, 1.0, 2.0, 0.0], dtype=torch.float64)
    d_small = torch.tensor([1.0, 4.0, 2.0, 0.0], dtype=torch.float64)
    expected = torch.tensor([0.75, -0.75, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(silhouette(d_large, d_small), expected)  # 0/0 gives 0, not NaN


def test_build_by_name_and_params() -> None:
    detector = build_detector("heatmap-clustering", composite="epsilon", pool=1)
    assert isinstance(detector, HeatmapClustering)
    assert detector.composite == "epsilon" and detector.pool == 1
    assert detector.init == "k-means++"  # the paper's code; "farthest" is the paper's text
    assert build_detector("heatmap-clustering", init="farthest").init == "farthest"
    with pytest.raises(ConfigError, match="init"):
        build_detector("heatmap-clustering", init="random")


def test_positive_relevance_clouds_keep_only_positive_pixels() -> None:
    """``relevance="positive"`` cuts the clouds from the positive part of each heatmap: no pixel
    without positive relevance enters a cloud, whereas the seed's min-max rescaling of the signed
    map gives every pixel above the minimum some mass."""
    case = make_case()
    evidence = case.evidence
    raw = HeatmapClustering(relevance="raw")
    positive = HeatmapClustering()
    maps = raw.heatmaps(evidence, "data", 0)
    clouds = positive.clouds(evidence, "data", 0)
    n_positive = (maps > 0).flatten(1).sum(1)
    assert (clouds.sizes <= n_positive.clamp(min=1)).all()
    raw_sizes = raw.clouds(evidence, "data", 0).sizes
    assert (clouds.sizes <= raw_sizes).all() and (clouds.sizes < raw_sizes).any()
    assert clouds is not raw.clouds(evidence, "data", 0)  # cached apart


def test_a_named_class_whose_suspects_stay_in_it_is_cleared(
    planted: Planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exclusionary reclassification (``confirm``): retrained without the suspects, a model
    that still calls them their claimed label makes the group a genuine mode, and the verdict
    is cleared; ``confirm=None`` keeps the verdict and never retrains."""
    retrained = fake_retraining(monkeypatch, POISONED)
    result = HeatmapClustering(classes=[POISONED, CLEAN], **FAST).fit(planted.evidence()).result
    assert len(retrained) == 1
    (verdict,) = [v for v in result.verdicts if v.label == POISONED]
    assert verdict.check is not None and verdict.check["legitimate"] and not verdict.poisoned
    assert not result.flagged.any()
    kept = HeatmapClustering(classes=[POISONED, CLEAN], confirm=None, **FAST)
    assert kept.fit(planted.evidence()).result.poisoned_classes == [POISONED]
    assert len(retrained) == 1
