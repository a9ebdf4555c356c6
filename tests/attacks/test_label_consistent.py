"""Label-consistent backdoor: clean labels, target-class poisons only, ε-bounded, full-amplitude tests."""

from __future__ import annotations

import pytest
import torch

from poisonlab.attacks import build_attack
from poisonlab.attacks.label_consistent import LabelConsistent
from poisonlab.errors import BudgetError, ConfigError
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from poisonlab.train import TrainConfig, train_model
from tests.conftest import blobs_dataset

CORNER = {"position": "bottom-right", "offset": 0}  # 8×8 images: no room for the 10×15 window


@pytest.fixture(scope="module")
def setup():
    data = blobs_dataset(n_per_class=30)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0)
    train_model(model, data, TrainConfig(epochs=2, batch_size=32, val_fraction=0.0, patience=None))
    return model, data, blobs_dataset(n_per_class=6, seed=1)


def test_clean_labels_and_target_class_poisons_only(setup) -> None:
    model, data, test = setup
    attack = LabelConsistent(
        target=2, target_rate=0.5, trigger="checkerboard", amplitude=64, **CORNER
    )
    result = attack.poison(data, generator=make_generator(0), model=model, test=test)
    poisons = result.is_poison.nonzero().flatten()
    assert result.n_poison == round(0.5 * 30)
    assert torch.equal(result.dataset.labels, data.labels)
    assert torch.equal(result.original_labels, data.labels)
    assert torch.all(data.labels[poisons] == 2)
    keep = ~result.is_poison
    assert torch.equal(result.dataset.images[keep], data.images[keep])
    assert list(result.dataset.ids[keep.numpy()]) == list(data.ids[keep.numpy()])
    assert all(i.endswith("+label-consistent") for i in result.dataset.ids[poisons.numpy()])
    assert torch.equal(result.source_index, torch.arange(len(data)))
    # outside the trigger: PGD stays within ε; on the trigger: at most ε + amp/255 more
    delta = (result.dataset.images[poisons] - data.images[poisons]).abs()
    trigger_area = torch.zeros(8, 8, dtype=torch.bool)
    trigger_area[5:, 5:] = True
    assert float(delta[:, :, ~trigger_area].max()) <= 0.075 + 1e-6
    assert float(delta[:, :, trigger_area].max()) <= 0.075 + 64 / 255 + 1e-6
    assert float(result.dataset.images.min()) >= 0 and float(result.dataset.images.max()) <= 1
    # the surrogate's loss on the poisons went up
    assert result.extras["pgd"]["loss_after_mean"] > result.extras["pgd"]["loss_before_mean"]
    assert result.extras["pgd"]["linf_max"] <= 0.075 + 1e-6
    # the test set: every non-target class, triggered at full amplitude, labelled target
    triggered = result.test_set
    assert triggered is not None and len(triggered) == 12
    assert torch.all(triggered.labels == 2)
    patch = triggered.images[:, :, 5:, 5:]
    assert torch.all((patch == 0) | (patch == 1))


def test_the_pgd_settings_are_the_ones_used(setup) -> None:
    """eps, steps and step_size other than the defaults harden the poisons: outside the trigger
    each poison is PGD's output for those settings on the given surrogate."""
    from poisonlab.attacks.pgd import pgd_maximize_loss

    model, data, _ = setup
    pgd = {"eps": 0.02, "steps": 3, "step_size": 0.01}  # 3 steps of 0.01 reach the 0.02 bound
    attack = LabelConsistent(target=1, count=6, trigger="checkerboard", **pgd, **CORNER)
    result = attack.poison(data, generator=make_generator(2), model=model)
    poisons = result.is_poison.nonzero().flatten()
    expected = pgd_maximize_loss(model, data.images[poisons], data.labels[poisons], **pgd).images
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[5:, 5:] = False  # the 3×3 checkerboard in the corner
    got = result.dataset.images[poisons]
    assert torch.equal(got[:, :, outside], expected[:, :, outside])
    assert result.extras["pgd"]["linf_max"] == pytest.approx(0.02, abs=1e-6)


def test_the_model_is_left_unchanged(setup) -> None:
    model, data, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    LabelConsistent(target=0, count=5, **CORNER).poison(
        data, generator=make_generator(1), model=model
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_same_seed_same_poisons(setup) -> None:
    model, data, _ = setup
    attack = LabelConsistent(target=1, target_rate=0.2, trigger="sticker", window=(6, 6))
    a = attack.poison(data, generator=make_generator(4), model=model)
    b = attack.poison(data, generator=make_generator(4), model=model)
    c = attack.poison(data, generator=make_generator(5), model=model)
    assert torch.equal(a.dataset.images, b.dataset.images)
    assert not torch.equal(a.is_poison, c.is_poison)


def test_trains_a_surrogate_when_given_no_model() -> None:
    data = blobs_dataset(n_per_class=10)
    attack = LabelConsistent(target=0, count=4, surrogate_epochs=1, **CORNER)
    result = attack.poison(data, generator=make_generator(0))
    assert result.extras["surrogate"]["trained"] is True
    assert result.n_poison == 4 and torch.equal(result.dataset.labels, data.labels)


def test_masr_set_is_the_test_set(setup) -> None:
    _, _, test = setup
    attack = LabelConsistent(target=0, **CORNER)
    masr = attack.masr_set(test)
    assert masr.target == 0 and sorted(set(masr.source_labels.tolist())) == [1, 2]
    assert torch.equal(masr.data.images, attack.test_set(test).data.images)


def test_a_model_for_other_data_is_refused(setup) -> None:
    _, data, _ = setup
    other = build_model(ModelConfig("cnn-small", 1, 8, 8, 5), seed=0)
    with pytest.raises(ConfigError, match="surrogate expects"):
        LabelConsistent(target=0, **CORNER).poison(data, generator=make_generator(0), model=other)


def test_budget_and_parameter_errors(setup) -> None:
    model, data, _ = setup
    with pytest.raises(BudgetError, match="needs 31 images of class 0"):
        LabelConsistent(target=0, count=31, **CORNER).poison(
            data, generator=make_generator(0), model=model
        )
    with pytest.raises(ConfigError, match="give only one of"):
        LabelConsistent(target_rate=0.1, count=3)
    with pytest.raises(ConfigError, match=r"eps must be a number in \(0, 1\]"):
        LabelConsistent(eps=16)
    with pytest.raises(ConfigError, match="surrogate_epochs must be an integer >= 1"):
        LabelConsistent(surrogate_epochs=0)
    with pytest.raises(ConfigError, match=r"amplitude must be an integer in \[1, 255\]"):
        LabelConsistent(trigger="checkerboard", amplitude=300)


def test_params_are_resolved_and_rebuild_the_attack() -> None:
    attack = build_attack("label-consistent", target=3, trigger="checkerboard", amplitude=32)
    params = attack.params()
    assert params["target_rate"] == 0.33 and params["eps"] == 0.075 and params["steps"] == 5
    assert params["step_size"] == 0.015 and params["offset"] == 0 and params["amplitude"] == 32
    assert "device" not in params
    assert LabelConsistent(**params).params() == params
