"""Feature collision (Poison Frogs): the batched optimiser, its units, pair choice and the contract."""

from __future__ import annotations

import copy

import pytest
import torch

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.attacks.collision_craft import (
    CollisionSettings,
    craft_poisons,
    feature_extractor,
    scaled_beta,
    watermark,
)
from poisonlab.attacks.feature_collision import (
    FeatureCollision,
    choose_pairs,
    minmax_feature_weights,
)
from poisonlab.errors import BudgetError, ConfigError
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from poisonlab.train import TrainConfig, train_model
from tests.conftest import blobs_dataset

# β = 0.03 per [0, 1] unit and λ = 1: the tiny test model collides within 40 iterations.
FAST = {"beta0": 0.03, "beta_scaling": "none", "pixel_scale": 1.0, "lr": 1.0, "max_iter": 40}


@pytest.fixture(scope="module")
def setup():
    data = blobs_dataset(n_per_class=20)
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, feature_dim=16), seed=0)
    train_model(model, data, TrainConfig(epochs=3, batch_size=20, val_fraction=0.0, patience=None))
    return model.eval(), data, blobs_dataset(n_per_class=5, seed=1)


def _poison(setup, **kwargs):
    model, data, test = setup
    params = {**FAST, "num_targets": 3, "bases_per_target": 2, **kwargs}
    return FeatureCollision(**params).poison(
        data, generator=make_generator(0), model=model, test=test
    )


def _hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_registered_and_built_by_name() -> None:
    assert ATTACKS.get("feature-collision") is FeatureCollision
    attack = build_attack("feature-collision", num_targets=2, beta0=0.5)
    assert isinstance(attack, FeatureCollision) and attack.params()["beta0"] == 0.5


def test_poisons_stay_in_the_box_and_collide(setup) -> None:
    result = _poison(setup)
    poisons = result.dataset.images[result.is_poison]
    assert poisons.min() >= 0.0 and poisons.max() <= 1.0
    ratio = torch.tensor(result.extras["distance_ratio"])
    assert torch.all(ratio < 0.5) and float(ratio.median()) < 0.25
    before = torch.tensor(result.extras["distance_before"])
    after = torch.tensor(result.extras["distance_after"])
    assert torch.allclose(ratio, after / before, rtol=1e-5)
    assert all(p > 0 for p in result.extras["perturbation_l2"])


def test_clean_label_rows_targets_and_ground_truth(setup) -> None:
    _, data, test = setup
    result = _poison(setup)
    n, p = len(data), 6
    assert result.n_poison == p and len(result.dataset) == n + p
    assert torch.equal(result.is_poison, torch.arange(n + p) >= n)
    assert torch.equal(result.dataset.images[:n], data.images)  # clean rows bit-identical
    assert torch.equal(result.dataset.labels[:n], data.labels)
    base_index = torch.tensor(result.extras["base_index"])
    assert torch.equal(result.source_index[n:], base_index)
    assert torch.equal(result.dataset.labels[n:], data.labels[base_index])  # clean label
    assert torch.equal(result.original_labels, result.dataset.labels)
    assert list(result.source_ids[n:]) == list(data.ids[base_index.numpy()])
    assert all(i.endswith("+feature-collision") for i in result.dataset.ids[n:])
    group = torch.tensor(result.extras["poison_target"])
    assert torch.equal(group, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert torch.equal(result.target_labels, result.dataset.labels[n:][::2])
    assert torch.all(result.target_labels != result.targets.labels)
    rows = torch.tensor(result.extras["target_index"])
    assert torch.equal(result.targets.images, test.images[rows])


def test_same_seed_same_poisons(setup) -> None:
    first, again = _poison(setup), _poison(setup)
    assert torch.equal(first.dataset.images, again.dataset.images)
    assert first.extras == again.extras
    model, data, test = setup
    other = FeatureCollision(**FAST, num_targets=3, bases_per_target=2).poison(
        data, generator=make_generator(1), model=model, test=test
    )
    assert other.extras["base_index"] != first.extras["base_index"]


def test_model_is_left_exactly_as_it_was(setup) -> None:
    model, data, test = setup
    model = copy.deepcopy(model).train()
    model.body.conv1.eval()  # a mixed state must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    wanted = {name: p.requires_grad for name, p in model.named_parameters()}
    FeatureCollision(**FAST, layer="body.relu1").poison(
        data, generator=make_generator(0), model=model, test=test
    )
    assert modes == {name: m.training for name, m in model.named_modules()}
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert wanted == {name: p.requires_grad for name, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert _hooks(model) == 0


def test_hooks_are_removed_on_error(setup) -> None:
    model = copy.deepcopy(setup[0])
    with pytest.raises(RuntimeError), feature_extractor(model, "body.fc1"):
        raise RuntimeError("boom")
    assert _hooks(model) == 0 and not model.training


def test_feature_layer_by_name(setup) -> None:
    model, data, test = setup
    result = craft_poisons(
        model, test.images[:2], data.images[45:47], torch.tensor([0, 1]),
        CollisionSettings(**{**FAST, "layer": "body.relu2"}),
    )  # fmt: skip
    assert result.feature_dim == 64 * 4 * 4  # conv2 output of an 8×8 input, flattened
    assert torch.all(result.distance_after < result.distance_before)
    with pytest.raises(ConfigError, match="unknown layer"):
        craft_poisons(model, test.images[:1], data.images[:1], torch.tensor([0]),
                      CollisionSettings(layer="body.nope"))  # fmt: skip


@pytest.mark.parametrize("rule", ["every-iteration", "mean-of-last"])
def test_batch_equals_each_poison_alone(setup, rule: str) -> None:
    model = copy.deepcopy(setup[0]).double()
    data, test = setup[1].images.double(), setup[2].images.double()
    targets, bases = test[[0, 7, 12]], data[[25, 26, 50, 51, 5, 6]]
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    settings = CollisionSettings(
        **{**FAST, "max_iter": 60, "step_rule": rule, "check_every": 7, "num_old_obj": 5}
    )
    together = craft_poisons(model, targets, bases, group, settings)
    assert together.poisons.dtype == torch.float64
    assert len(set(together.final_lr.tolist())) > 1  # each poison has its own λ
    for i in range(len(bases)):
        alone = craft_poisons(model, targets[group[i : i + 1]], bases[i : i + 1],
                              torch.tensor([0]), settings)  # fmt: skip
        assert torch.allclose(alone.poisons[0], together.poisons[i], atol=1e-9)
        assert int(alone.iterations[0]) == int(together.iterations[i])
        assert float(alone.final_lr[0]) == pytest.approx(float(together.final_lr[i]))
    chunked = craft_poisons(
        model, targets, bases, group, CollisionSettings(**{**settings.to_dict(), "batch_size": 2})
    )
    assert torch.allclose(chunked.poisons, together.poisons, atol=1e-9)


def _reference_poison(model, target, base, *, beta0, lr, max_iter, objective, decay=0.5):
    """The official algorithm for one poison, literally on the [0, 255] scale, with Yaseen et al.'s
    every-iteration rule: the oracle for the batched code's unit conversion."""
    beta = beta0 * (2048 / base.numel()) ** 2

    def feats(img255):
        return model.features((img255 / 255.0)[None])[0]

    with torch.no_grad():
        goal, b = feats(255 * target), 255 * base
    x = b.clone()

    def value(img):
        with torch.no_grad():
            pixel = (img - b).norm()
            penalty = beta * pixel if objective == "official" else 0.5 * beta * pixel**2
            return float((feats(img) - goal).norm() + penalty)

    current = value(x)
    for _ in range(max_iter):
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((feats(xg) - goal).norm(), xg)
        candidate = ((x - lr * grad + lr * beta * b) / (1 + lr * beta)).clamp(0, 255)
        if (candidate - x).norm() / candidate.norm() < 1e-10:
            break
        new = value(candidate)
        if new >= current:
            lr *= decay
        else:
            x, current = candidate, new
    return x / 255.0


@pytest.mark.parametrize("objective", ["splitting", "official"])
def test_units_reproduce_the_reference_iterates_on_the_255_scale(setup, objective: str) -> None:
    model = copy.deepcopy(setup[0]).double().eval()
    target, base = setup[2].images[3].double(), setup[1].images[30].double()
    beta0, lr = 1.5e-8, 500 * 255.0  # β·255² ≈ 1 on 8×8 images; the paper's λ
    expected = _reference_poison(
        model, target, base, beta0=beta0, lr=lr, max_iter=25, objective=objective
    )
    settings = CollisionSettings(
        beta0=beta0, lr=lr, pixel_scale=255.0, max_iter=25, objective=objective
    )
    result = craft_poisons(model, target[None], base[None], torch.tensor([0]), settings)
    assert float((expected - base).norm()) > 0.1  # the test poison really moved
    assert torch.allclose(result.poisons[0], expected, atol=1e-9)


def test_the_official_objective_can_stall_where_splitting_moves(setup) -> None:
    model, data, test = setup
    stiff = {**FAST, "beta0": 100.0}  # β above ||∇ feature distance||: O rejects every step
    args = (model, test.images[:2], data.images[:2], torch.tensor([0, 1]))
    official = craft_poisons(*args, CollisionSettings(**stiff, objective="official"))
    splitting = craft_poisons(*args, CollisionSettings(**stiff))
    assert torch.equal(official.poisons, data.images[:2])
    assert torch.all(splitting.distance_after < splitting.distance_before)


def test_beta_scaling_formulas() -> None:
    inception = 3 * 299 * 299
    assert scaled_beta(0.25, inception, 2048) == pytest.approx(0.25 * (2048 / inception) ** 2)
    assert scaled_beta(0.0083, 784, 2) == pytest.approx(0.0566, abs=5e-5)  # Yaseen et al.'s β
    assert scaled_beta(256.0, 784, 128, "feature-dim") == pytest.approx(256 * (128 / 784) ** 2)
    assert scaled_beta(0.7, 784, 128, "none") == 0.7
    with pytest.raises(ConfigError, match="beta_scaling"):
        scaled_beta(1.0, 10, 10, "inception")


def test_watermark_blend_and_additive(setup) -> None:
    model, data, test = setup
    base, target = data.images[:1], test.images[5:6]
    assert torch.allclose(watermark(base, target, 0.3), 0.3 * target + 0.7 * base)
    assert torch.equal(watermark(base, target, 0.0), base)
    with pytest.raises(ConfigError, match="opacity"):
        watermark(base, target, 1.5)
    frozen = CollisionSettings(beta0=1e9, beta_scaling="none", pixel_scale=1.0, lr=1.0,
                               max_iter=3)  # fmt: skip  # huge β: the poison stays at its anchor
    blend = craft_poisons(model, target, base, torch.tensor([0]), frozen, opacity=0.3)
    assert torch.allclose(blend.poisons, 0.3 * target + 0.7 * base, atol=1e-5)
    assert float(blend.perturbation[0]) == pytest.approx(
        float((0.3 * (target - base)).norm()), rel=1e-3
    )
    added = craft_poisons(
        model, target, base, torch.tensor([0]), frozen, opacity=0.3, watermark_mode="additive"
    )
    assert torch.allclose(added.poisons, (base + 0.3 * target).clamp(0, 1), atol=1e-5)


def test_the_attack_watermarks_its_poisons(setup) -> None:
    """FeatureCollision's watermark and watermark_mode reach the crafting: with a β so large the
    poisons stay at their anchors, each poison is its base blended with (or plus) 30% target."""
    model, data, test = setup
    frozen = {**FAST, "beta0": 1e9, "max_iter": 3}
    base, target = data.images[45], test.images[5]
    pairs = {"target_index": torch.tensor([5]), "base_index": torch.tensor([[45]])}
    for mode, expected in (
        ("blend", 0.3 * target + 0.7 * base),
        ("additive", (base + 0.3 * target).clamp(0, 1)),
    ):
        attack = FeatureCollision(**frozen, watermark=0.3, watermark_mode=mode)
        result = attack.poison(data, generator=make_generator(0), model=model, test=test, **pairs)
        poison = result.dataset.images[result.is_poison][0]
        assert torch.allclose(poison, expected, atol=1e-5), mode


def test_converged_poisons_stop_moving(setup) -> None:
    model, data, test = setup
    done = CollisionSettings(**{**FAST, "obj_threshold": 1e9})  # reached before the first step
    result = craft_poisons(model, test.images[:2], data.images[:2], torch.tensor([0, 1]), done)
    assert torch.equal(result.poisons, data.images[:2])
    assert result.iterations.tolist() == [0, 0] and result.converged.all()
    tight = CollisionSettings(**{**FAST, "max_iter": 400, "stop_tol": 1e-4})
    moved = craft_poisons(model, test.images[:2], data.images[:2], torch.tensor([0, 1]), tight)
    assert moved.converged.all() and (moved.iterations < 400).all()


def test_pair_choice_rules() -> None:
    labels = torch.arange(4).repeat_interleave(5)  # 4 classes × 5 images
    targets, bases = choose_pairs(
        labels, labels, num_targets=6, bases_per_target=2, generator=make_generator(3)
    )
    assert len(set(targets.tolist())) == 6 and bases.shape == (6, 2)
    assert len(set(bases.flatten().tolist())) == 12  # no base reused
    assert torch.all(labels[bases] == labels[bases][:, :1])  # one class per target
    assert torch.all(labels[bases[:, 0]] != labels[targets])
    fixed, fixed_bases = choose_pairs(labels, labels, num_targets=2, bases_per_target=1,
                                      generator=make_generator(0), target_class=1, base_class=3)  # fmt: skip
    assert torch.all(labels[fixed] == 1) and torch.all(labels[fixed_bases] == 3)
    with pytest.raises(BudgetError, match="targets requested"):
        choose_pairs(
            labels, labels, num_targets=21, bases_per_target=1, generator=make_generator(0)
        )
    with pytest.raises(BudgetError, match="unused images"):
        choose_pairs(labels, labels, num_targets=3, bases_per_target=5,
                     generator=make_generator(0), base_class=2)  # fmt: skip


def test_the_attack_draws_targets_and_bases_from_the_classes_asked(setup) -> None:
    result = _poison(setup, max_iter=1, num_targets=2, target_class=1, base_class=2)
    assert result.targets is not None and result.targets.labels.tolist() == [1, 1]
    assert result.dataset.labels[result.is_poison].tolist() == [2] * 4  # 2 bases per target


def test_the_attack_takes_the_closest_bases_when_asked(setup) -> None:
    """base_selection="closest": the two class-2 images nearest the target in feature space."""
    model, data, test = setup
    kwargs = {"target_class": 0, "base_class": 2, "base_selection": "closest"}
    result = _poison(setup, max_iter=1, num_targets=1, **kwargs)
    (target,) = result.extras["target_index"]
    with torch.no_grad():
        distance = (
            model.features(data.images) - model.features(test.images[target : target + 1])
        ).norm(dim=1)
    candidates = (data.labels == 2).nonzero().flatten()
    nearest = candidates[distance[candidates].argsort()[:2]]
    assert result.extras["base_index"] == nearest.tolist()


def test_closest_bases_are_nearest_in_feature_space() -> None:
    labels = torch.tensor([0, 1, 1, 1])
    features = torch.tensor([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    _, bases = choose_pairs(labels[:1], labels, num_targets=1, bases_per_target=2,
                                  generator=make_generator(0), target_features=features[:1],
                                  base_features=features)  # fmt: skip
    assert bases.tolist() == [[2, 3]]


def test_explicit_pairs_and_their_checks(setup) -> None:
    model, data, test = setup
    attack = FeatureCollision(**{**FAST, "max_iter": 2})
    bases = (data.labels == 2).nonzero().flatten()[:2]
    target = (test.labels == 0).nonzero().flatten()[:1]
    result = attack.poison(data, generator=make_generator(0), model=model, test=test,
                           target_index=target, base_index=bases[None])  # fmt: skip
    assert result.extras["base_index"] == bases.tolist() and result.target_labels.tolist() == [2]
    same = (data.labels == 0).nonzero().flatten()[:1]
    with pytest.raises(ConfigError, match="equals its target"):
        attack.poison(data, generator=make_generator(0), model=model, test=test,
                      target_index=target, base_index=same[None])  # fmt: skip
    with pytest.raises(ConfigError, match="both"):
        attack.poison(data, generator=make_generator(0), model=model, target_index=target)
    with pytest.raises(
        ConfigError, match=r"needs the victim model: poison\(train, model=.*got None"
    ):
        attack.poison(data, generator=make_generator(0))


def test_normalised_features_weights() -> None:
    feats = torch.tensor([[0.0, 2.0, 1.0], [4.0, 3.0, 1.0]])
    assert minmax_feature_weights(feats).tolist() == [0.5, 2.0, 1.0]


def test_feature_weights_scale_the_feature_distance(setup) -> None:
    """Weights of 2 on every feature double the distance ‖w ⊙ (f(x) − f(t))‖: the unweighted
    problem with λ doubled and β halved takes the same forward-backward steps (every objective
    value halved, so the same steps are accepted), hence the same poisons."""
    model = copy.deepcopy(setup[0]).double()
    targets, bases = setup[2].images[[0, 7]].double(), setup[1].images[[25, 50]].double()
    args = (model, targets, bases, torch.tensor([0, 1]))
    doubled = torch.full((16,), 2.0, dtype=torch.float64)
    weighted = craft_poisons(*args, CollisionSettings(**FAST), feature_weights=doubled)
    rescaled = craft_poisons(*args, CollisionSettings(**{**FAST, "lr": 2.0, "beta0": 0.015}))
    plain = craft_poisons(*args, CollisionSettings(**FAST))
    assert torch.allclose(weighted.poisons, rescaled.poisons, atol=1e-9)
    assert not torch.allclose(weighted.poisons, plain.poisons, atol=1e-3)


def test_seed000_normalisation_weighs_the_features(setup) -> None:
    result = _poison(setup, normalize_features=True, num_targets=1, bases_per_target=1)
    assert result.params["normalize_features"] is True and result.n_poison == 1
    plain = _poison(setup, num_targets=1, bases_per_target=1)
    assert result.extras["base_index"] == plain.extras["base_index"]  # the same pair...
    poisons = (r.dataset.images[r.is_poison] for r in (result, plain))
    assert not torch.allclose(*poisons, atol=1e-3)  # ...crafted against weighted features


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"beta0": 0.0}, "beta0"),
        ({"lr": -1.0}, "lr"),
        ({"pixel_scale": float("inf")}, "pixel_scale"),
        ({"decay": 1.0}, "decay"),
        ({"max_iter": 0}, "max_iter"),
        ({"num_old_obj": 1.5}, "num_old_obj"),
        ({"step_rule": "armijo"}, "step_rule"),
        ({"objective": "squared"}, "objective"),
        ({"beta_scaling": "inception"}, "beta_scaling"),
        ({"obj_threshold": -1.0}, "obj_threshold"),
        ({"layer": ""}, "layer"),
        ({"num_targets": 0}, "num_targets"),
        ({"bases_per_target": True}, "bases_per_target"),
        ({"watermark": 1.0}, "watermark"),
        ({"watermark_mode": "overlay"}, "watermark_mode"),
        ({"base_selection": "farthest"}, "base_selection"),
        ({"target_class": 2, "base_class": 2}, "base_class"),
    ],
)
def test_bad_hyper_parameters_name_themselves(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        FeatureCollision(**kwargs)


def test_poison_does_not_mutate_hyper_parameters(setup) -> None:
    attack = FeatureCollision(**FAST, num_targets=2)
    before = attack.params()
    model, data, test = setup
    result = attack.poison(data, generator=make_generator(0), model=model, test=test)
    assert attack.params() == before
    assert result.params["beta"] == 0.03 and result.params["feature_dim"] == 16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(setup) -> None:
    model, data, test = setup
    settings = CollisionSettings(**FAST)
    cpu = craft_poisons(model, test.images[:2], data.images[:2], torch.tensor([0, 1]), settings)
    gpu_model = copy.deepcopy(model).cuda()
    gpu = craft_poisons(gpu_model, test.images[:2], data.images[:2], torch.tensor([0, 1]), settings)
    assert gpu.poisons.device.type == "cpu"
    assert torch.allclose(cpu.poisons, gpu.poisons, atol=1e-3)
