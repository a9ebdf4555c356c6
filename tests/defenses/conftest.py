"""Synthetic evidence with planted poisons, and one small real backdoored model, for defense tests.

Synthetic case (:func:`make_case`, milliseconds): tiny 1×8×8 images, ``num_classes`` classes, each a
bright square in a class-specific place plus noise. Poisons are dirty-label and all-to-all, as in
BadNets: an image of class (y − 1) with a bright 3×3 corner trigger, labelled y. Their penultimate
"features" are planted with :meth:`Evidence.put` (no network is run for them): clean samples of
class y are anisotropic Gaussians around a class mean, poisons sit ``shift`` away along a random
direction of their class. A clean held-out set (images and features) and a real, untrained
cnn-small (with an LGM head when asked) complete the Evidence, so every standard representation
a detector may ask for exists.

Per-detector hooks for the shared contract suite (tests/defenses/test_contract.py), all keyed by
registry name; a newly registered detector joins the suite with the defaults and needs an entry
only when it wants something else:

- ``CONTRACT_VARIANTS[name]``: {variant id: constructor kwargs}; default ``{"default": {}}``.
  Use it for fast settings (few epochs, few MC samples) and to run extra code paths.
- ``PREPARE[name]``: ``fn(evidence) -> None`` that puts extra representations into the Evidence
  (e.g. Monte-Carlo probabilities, heatmaps) before the detector runs, on the synthetic case and
  on the real one.
- ``BAD_PARAMS[name]``: kwargs that must raise ConfigError in ``__init__``.
- ``FRESH_DRAWS``: inductive detectors whose scores of new samples use fresh random draws
  (Monte-Carlo passes on their own stream), so they match the held-out reference in distribution
  only, not sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses.base import Detector
from poisonlab.defenses.evidence import Evidence
from poisonlab.defenses.thresholds import ScoreSet
from poisonlab.models import ModelConfig, build_model
from poisonlab.models.network import FEATURE_LAYER, Network

FEATURE_DIM = 16


@dataclass
class SyntheticCase:
    """An Evidence with planted poisons and its ground truth."""

    evidence: Evidence
    is_poison: Tensor
    features: Tensor
    holdout_features: Tensor

    @property
    def labels(self) -> Tensor:
        """Claimed labels of the suspect data."""
        return self.evidence.labels()


def plant_features(evidence: Evidence, features: Tensor, part: str = "data") -> None:
    """Make ``evidence.features(part)`` (and ``activations("body")``) return ``features``."""
    for pool in (False, True):
        evidence.put(("activations", FEATURE_LAYER, part, pool), features.float())


def class_images(labels: Tensor, generator: torch.Generator, size: int = 8) -> Tensor:
    """1×size×size images: a 3×3 bright square at a class-specific place plus uniform noise."""
    images = 0.15 * torch.rand(len(labels), 1, size, size, generator=generator)
    for i, k in enumerate(labels.tolist()):
        row, col = divmod(k % 4, 2)
        images[i, :, row * 4 : row * 4 + 3, col * 4 : col * 4 + 3] += 0.8
    return images.clamp(0, 1)


def add_trigger(images: Tensor) -> Tensor:
    """A bright 3×3 patch in the bottom-right corner (an obvious BadNets-like trigger)."""
    out = images.clone()
    out[:, :, -3:, -3:] = 1.0
    return out


def planted_features(
    labels: Tensor,
    is_poison: Tensor,
    *,
    num_classes: int,
    shift: float,
    generator: torch.Generator,
    dim: int = FEATURE_DIM,
) -> Tensor:
    """Class-mean + anisotropic noise; poisons moved ``shift`` along their class's own direction."""
    means = 8.0 * torch.randn(num_classes, dim, generator=generator)
    directions = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=generator))
    spread = torch.ones(dim)
    spread[:3] = 2.0  # a few natural directions of larger variance than the rest
    noise = torch.randn(len(labels), dim, generator=generator) * spread
    return means[labels] + noise + shift * is_poison[:, None].float() * directions[labels]


def make_case(
    *,
    n_per_class: int = 60,
    num_classes: int = 3,
    poison_fraction: float = 0.1,
    poisoned_classes: tuple[int, ...] | None = None,
    shift: float = 10.0,
    lgm: bool = False,
    with_model: bool = True,
    holdout_per_class: int = 20,
    seed: int = 0,
) -> SyntheticCase:
    """A planted-poison Evidence (module docstring); poisons are a ``poison_fraction`` of each
    poisoned class (all classes unless ``poisoned_classes``), appended after the clean rows."""
    generator = torch.Generator().manual_seed(seed)
    clean_labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    targets = range(num_classes) if poisoned_classes is None else poisoned_classes
    n_poison = round(poison_fraction * n_per_class / (1 - poison_fraction))
    poison_labels = torch.tensor(
        [t for t in targets for _ in range(n_poison)], dtype=torch.long
    ).reshape(-1)
    source_labels = (poison_labels - 1) % num_classes
    images = torch.cat(
        [
            class_images(clean_labels, generator),
            add_trigger(class_images(source_labels, generator)),
        ]
    )
    labels = torch.cat([clean_labels, poison_labels])
    is_poison = torch.cat(
        [
            torch.zeros(len(clean_labels), dtype=torch.bool),
            torch.ones(len(poison_labels), dtype=torch.bool),
        ]
    )
    data = ImageDataset(images, labels, num_classes, name="planted")
    held_labels = torch.arange(num_classes).repeat_interleave(holdout_per_class)
    holdout = ImageDataset(
        class_images(held_labels, generator), held_labels, num_classes, name="held"
    )
    all_labels = torch.cat([labels, held_labels])
    all_poison = torch.cat([is_poison, torch.zeros(len(held_labels), dtype=torch.bool)])
    features = planted_features(
        all_labels, all_poison, num_classes=num_classes, shift=shift, generator=generator
    )
    model = tiny_model(num_classes, lgm=lgm) if with_model else None
    evidence = Evidence(data, model, holdout=holdout, device="cpu")
    plant_features(evidence, features[: len(labels)], "data")
    plant_features(evidence, features[len(labels) :], "holdout")
    return SyntheticCase(evidence, is_poison, features[: len(labels)], features[len(labels) :])


def fake_retraining(monkeypatch: pytest.MonkeyPatch, predicted: int) -> list[Tensor]:
    """Replace the exclusionary reclassification's retraining by a stub: the "retrained" model
    classifies every suspect as ``predicted``. Returns the list each retraining's excluded flags
    are appended to (so a test can count retrainings and check what they left out)."""
    import poisonlab.defenses.reclassification as reclassification
    import poisonlab.train as train

    excluded: list[Tensor] = []

    def retrain(evidence: object, flags: Tensor, **kwargs: object) -> str:
        excluded.append(flags.clone())
        return "retrained"

    def predict(model: str, images: Tensor, **kwargs: object) -> Tensor:
        assert model == "retrained"
        return torch.full((len(images),), predicted)

    monkeypatch.setattr(reclassification, "retrain_without", retrain)
    monkeypatch.setattr(train, "predict", predict)
    return excluded


def tiny_model(num_classes: int, *, lgm: bool = False, feature_dim: int = FEATURE_DIM) -> Network:
    """An untrained cnn-small for 1×8×8 inputs (seeded weights)."""
    config = ModelConfig(
        "cnn-small", 1, 8, 8, num_classes, head="lgm" if lgm else "softmax", feature_dim=feature_dim
    )
    return build_model(config, seed=0)


@pytest.fixture
def case() -> SyntheticCase:
    """The default planted case: 3 classes × 60 clean + 7 poisons each."""
    return make_case()


# ---------------------------------------------------------------------------------------------
# Per-detector hooks of the contract suite (see the module docstring).

CONTRACT_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "activation-clustering": {
        "default": {"n_init": 2},
        "pca-silhouette": {"reduce": "pca", "rule": "silhouette", "n_init": 2},
        "ex-re": {"ex_re_threshold": 1.0, "retrain_epochs": 1, "n_init": 2},
    },
    "raw-clustering": {"default": {"n_init": 2}},
    # bnn: one fine-tuning epoch and a few MC passes keep each fit well under a second
    "bnn": {
        "default": {"epochs": 1, "samples": 4},
        "entropy-replicas": {"epochs": 1, "samples": 5, "replicas": 2, "score": "entropy"},
    },
    "dnn-uncertainty": {"default": {}, "max-softmax": {"score": "max-softmax"}},
    # heatmap-clustering: GW k-means is the cost; small clouds, few GW iterations, ε = 0.1 (at
    # the paper's 0.02 entropic GW needs ~10× more iterations) and one barycenter update of 4
    # points keep a fit to seconds (k-means++ seeding only, max_iter=0, took 157 s on the real
    # case: its centers are 16-point clouds, not 4-point barycenters)
    "heatmap-clustering": {
        "default": {
            "max_iter": 1,
            "epsilon": 0.1,
            "n_support": 4,
            "max_points": 16,
            "seed_gw_max_iter": 20,
            "relevance": "positive",
        },
        "claimed-one-update": {
            "explain": "claimed",
            "composite": "epsilon",
            "max_iter": 1,
            "epsilon": 0.1,
            "n_support": 4,
            "max_points": 16,
            "seed_gw_max_iter": 20,
        },
    },
}

PREPARE: dict[str, Callable[[Evidence], None]] = {}

FRESH_DRAWS: set[str] = {"bnn"}

BAD_PARAMS: dict[str, list[dict[str, Any]]] = {
    "activation-clustering": [
        {"reduce": "tsne"},
        {"n_components": 0},
        {"rule": "largest"},
        {"size_threshold": 0.7},
        {"silhouette_threshold": 1.5},
        {"ex_re_threshold": 0.0},
        {"retrain_epochs": 0},
        {"n_init": 0},
        {"select": "best"},
        {"layer": ""},
    ],
    "spectral-signatures": [{"eps": 0.0}, {"eps": 1.0}, {"eps_multiplier": -1.0}, {"layer": 3}],
    "raw-clustering": [{"reduce": "umap"}, {"n_components": 2.5}, {"seed": "zero"}],
    "bnn": [
        {"score": "variance"},
        {"samples": 0},
        {"delta": 0.0},
        {"prior_sigma": -1.0},
        {"prior_mean": "random"},
        {"epochs": -1},
        {"kl_weight": -0.5},
        {"replicas": 0},
        {"rule_fpr": 1.0},
        {"rule_fraction": 0.0},
        {"seed": 1.5},
    ],
    "dnn-uncertainty": [{"score": "bald"}, {"rule_fpr": 0.0}],
    "heatmap-clustering": [
        {"composite": "gradient"},
        {"relevance": "signed"},
        {"explain": "target"},
        {"mass": 0.0},
        {"mass": 1.5},
        {"pool": 0},
        {"max_points": 0},
        {"epsilon": 0.0},
        {"lrp_epsilon": -1.0},
        {"bary_epsilon": 0.0},
        {"n_support": 1},
        {"max_iter": -1},
        {"seed_gw_max_iter": 0},
        {"top_heatmaps": -1},
        {"seed": 1.5},
    ],
}


# ---------------------------------------------------------------------------------------------
# A small real case: cnn-small trained on 8×8 digits backdoored with BadNets (Schulth et al. 2022).


@dataclass
class RealCase:
    """A trained backdoored model, its poisoned training data and a clean held-out set."""

    evidence_factory: Callable[[], Evidence]
    is_poison: Tensor
    model: Network
    target: int
    attack_success: float
    clean_accuracy: float


@pytest.fixture(scope="session")
def digits_backdoor() -> RealCase:
    """Digits split 70/15/15 (train / clean held-out / test); BadNets one-to-one 2 → 5 with a white
    3×3 square, poisons 20% of class 5 (Schulth et al. 2022 Table 1's setting); cnn-small with 32-d
    features trained 5 epochs. One thread: a few seconds, where two threads on a busy 2-core machine
    oversubscribe and take ten times longer."""
    from poisonlab.attacks import build_attack
    from poisonlab.data import load_dataset, split_dataset
    from poisonlab.train import TrainConfig, evaluate, train_model

    split = split_dataset(load_dataset("digits"), holdout=0.15, test=0.15, seed=0)
    attack = build_attack("badnets", source=2, target=5, target_rate=0.2, trigger="square", size=3)
    poisoned = attack.poison(
        split.train, generator=torch.Generator().manual_seed(0), test=split.test
    )
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 10, feature_dim=32), seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(
            epochs=5, batch_size=64, lr=3e-3, val_fraction=0.0, patience=None, seed=0
        )
        train_model(model, poisoned.dataset, config, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert poisoned.test_set is not None

    def factory() -> Evidence:
        return Evidence(poisoned.dataset, model, holdout=split.holdout, device="cpu")

    return RealCase(
        factory,
        poisoned.is_poison,
        model,
        target=5,
        attack_success=evaluate(model, poisoned.test_set, device="cpu").accuracy,
        clean_accuracy=evaluate(model, split.test, device="cpu").accuracy,
    )


class Planted(Detector):
    """A verdict-giving detector whose scores are given: fit's verdict machinery on known data."""

    name = "planted"
    needs_model = False
    gives_verdicts = True

    def __init__(self, scores: torch.Tensor, threshold: str | None = None) -> None:
        super().__init__(threshold=threshold)
        self._planted = scores

    def _score(self, evidence: Evidence) -> ScoreSet:
        return ScoreSet(self._planted, torch.zeros(len(self._planted), dtype=torch.bool))
