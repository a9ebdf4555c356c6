"""The filter-and-fine-tune loop with Poison Frogs' per-target retraining and a separate scorer."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.train import TrainConfig
from poisonlab.workflows import filter_and_finetune
from tests.defenses.test_lgm_likelihood import MEANS, collision_set, feature_network, planted

CONFIG = TrainConfig(epochs=30, batch_size=32, lr=0.05, val_fraction=0.0, patience=None)


def test_a_softmax_victim_filtered_by_an_lgm_scorer_loses_the_attack():
    poisoned = collision_set()  # 40 poisons at a class-0 target's features, claiming class 1
    victim = feature_network(MEANS, head="softmax")
    scorer = feature_network(MEANS)  # F_LGM: the same features with an LGM head
    before = {k: v.clone() for k, v in victim.state_dict().items()}
    report = filter_and_finetune(
        victim,
        poisoned,
        scorer=scorer,
        finetune="head-per-target",
        train_config=CONFIG,
        test=poisoned.dataset.subset(~poisoned.is_poison),
        device="cpu",
    )
    assert report.n_poison_removed == 40 and report.n_clean_removed <= 5
    assert report.success_without_filter == 1.0  # the retrained head learned the poisons
    assert report.success_with_filter == 0.0  # and without them it keeps the target
    assert report.clean_accuracy_with_filter >= 0.9
    assert report.finetune == "head-per-target"
    assert all(torch.equal(v, before[k]) for k, v in victim.state_dict().items())


def test_the_detector_given_is_the_one_that_filters():
    """A detector with its own threshold (a quarter of every class) does the filtering, not the
    default likelihood filter (which removes the 40 poisons and at most a few clean rows)."""
    from poisonlab.defenses import Contamination, TargetFPR
    from poisonlab.defenses.lgm_likelihood import LGMLikelihood

    poisoned = collision_set()  # classes of 80, 80 + 40 poisons, 80
    quarter = LGMLikelihood(threshold=Contamination(0.25))
    config = TrainConfig(epochs=1, batch_size=64, val_fraction=0.0, patience=None)
    report = filter_and_finetune(
        feature_network(MEANS), poisoned, detector=quarter, train_config=config, device="cpu"
    )
    assert report.n_poison_removed + report.n_clean_removed == 20 + 30 + 20
    # a target-FPR cut reads the held-out set it is given
    holdout, _ = planted(n_clean=300, n_poison=0, seed=5)
    calibrated = LGMLikelihood(threshold=TargetFPR(0.05))
    report = filter_and_finetune(
        feature_network(MEANS), poisoned, detector=calibrated, holdout=holdout,
        train_config=config, device="cpu",
    )  # fmt: skip
    assert report.n_poison_removed == 40 and report.n_clean_removed < 0.15 * 240


def test_without_a_scorer_the_victim_itself_is_read():
    poisoned = collision_set()
    victim = feature_network(MEANS, head="softmax")
    with pytest.raises(ConfigError, match="LGM"):  # the likelihood filter needs an LGM model
        filter_and_finetune(victim, poisoned, finetune="head-per-target", train_config=CONFIG)


def test_per_target_retraining_needs_a_feature_collision_set():
    poisoned = collision_set()
    backdoor = type(poisoned)(
        dataset=poisoned.dataset,
        is_poison=poisoned.is_poison,
        original_labels=poisoned.original_labels,
        source_index=poisoned.source_index,
        source_ids=poisoned.source_ids,
        attack="badnets",
        test_set=poisoned.targets,
    )
    with pytest.raises(ConfigError, match="feature-collision"):
        filter_and_finetune(
            feature_network(MEANS), backdoor, finetune="head-per-target", train_config=CONFIG
        )
    with pytest.raises(ConfigError, match="finetune"):
        filter_and_finetune(feature_network(MEANS), poisoned, finetune="frozen")
