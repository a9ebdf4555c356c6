"""Feature-collision evaluation protocols (transfer learning, end to end) and the setting of
Yaseen et al. 2020."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

from poisonlab.attacks.base import PoisonedDataset
from poisonlab.attacks.feature_collision import FeatureCollision
from poisonlab.data import load_dataset
from poisonlab.data.dataset import ImageDataset, concatenate
from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model
from poisonlab.seeding import make_generator
from poisonlab.train import TrainConfig, train_model
from poisonlab.workflows.collision_eval import (
    TransferConfig,
    _HeadCall,
    _softmax_losses,
    evaluate_end_to_end,
    evaluate_transfer,
)
from poisonlab.workflows.lgm_paper_collision import SEED000_SETTINGS, run_seed000, seed000_attack

QUICK = {"beta0": 0.03, "beta_scaling": "none", "pixel_scale": 1.0, "lr": 1.0, "max_iter": 2}


def _three_digits(rows: range) -> ImageDataset:
    digits = load_dataset("digits")  # scikit-learn's bundled 8×8 digits: no download
    three = digits.subset(digits.labels < 3).subset(list(rows))
    return ImageDataset(three.images, three.labels, 3, name="digits-0-2", ids=three.ids)


@pytest.fixture(scope="module")
def setup():
    """A cnn-small (128-d features) pre-trained on 300 digits 0-2; a 30-image fine-tuning set
    (few points in many dimensions, like the paper's 1800 images in 2048-d: each is separable);
    30 further digits as targets."""
    model = build_model(ModelConfig("cnn-small", 1, 8, 8, 3), seed=0)
    config = TrainConfig(epochs=3, batch_size=30, val_fraction=0.0, patience=None)
    train_model(model, _three_digits(range(300)), config)
    return model.eval(), _three_digits(range(300, 330)), _three_digits(range(330, 360))


def _poisoned(setup, targets: int = 3, per_target: int = 1, **kwargs) -> PoisonedDataset:
    model, finetune, test = setup
    attack = FeatureCollision(
        **{**QUICK, **kwargs}, num_targets=targets, bases_per_target=per_target
    )
    return attack.poison(finetune, generator=make_generator(0), model=model, test=test)


def _with_poison_images(result: PoisonedDataset, images: torch.Tensor) -> PoisonedDataset:
    """The same poisoned set with its poison rows replaced by ``images``."""
    all_images = result.dataset.images.clone()
    all_images[result.is_poison] = images
    return dataclasses.replace(result, dataset=result.dataset.with_images(all_images))


def test_a_perfect_collision_succeeds_and_the_untouched_base_does_not(setup) -> None:
    model, finetune, test = setup
    result = _poisoned(setup)
    group = torch.tensor(result.extras["poison_target"])
    perfect = _with_poison_images(result, result.targets.images[group])  # f(p) = f(t) exactly
    config = TransferConfig(epochs=500)  # 31 images, batch 32: 500 Adam steps
    hit = evaluate_transfer(model, perfect, config=config, clean_test=test)
    assert hit.success.all() and hit.rate.successes == 3
    assert torch.equal(hit.predicted, result.target_labels)
    assert hit.poison_fit.tolist() == [1.0, 1.0, 1.0]
    bases = finetune.images[torch.tensor(result.extras["base_index"])]
    control = evaluate_transfer(
        model, _with_poison_images(result, bases), config=config, clean_test=test
    )
    assert not control.success.any()
    assert torch.equal(control.predicted, result.targets.labels)  # targets stay correct
    assert (control.baseline_predicted == result.targets.labels).all()
    assert control.clean_accuracy.shape == (3,) and (control.clean_accuracy > 0.8).all()


def _only_target(result: PoisonedDataset, j: int) -> PoisonedDataset:
    """The poisoned set reduced to target ``j`` and its own poisons."""
    group = torch.tensor(result.extras["poison_target"])
    keep = ~result.is_poison
    keep[result.is_poison.nonzero().flatten()[group == j]] = True
    n_kept = int(keep.sum()) - int((~result.is_poison).sum())
    return dataclasses.replace(
        result,
        dataset=result.dataset.subset(keep),
        is_poison=result.is_poison[keep],
        original_labels=result.original_labels[keep],
        source_index=result.source_index[keep],
        source_ids=result.source_ids[keep.numpy()],
        targets=result.targets.subset([j]),
        target_labels=result.target_labels[[j]],
        extras={"poison_target": [0] * n_kept},
    )


@pytest.mark.parametrize("start", ["cold", "warm"])
def test_batched_per_target_training_equals_one_retraining_per_target(setup, start: str) -> None:
    model = setup[0]
    result = _poisoned(setup, targets=3, per_target=2)
    config = TransferConfig(epochs=5, start=start, seed=4)
    together = evaluate_transfer(model, result, config=config)
    for j in range(3):
        alone = evaluate_transfer(model, _only_target(result, j), config=config)
        # float32, batched vs one head: measured gaps < 1e-6 on logits of size ~2 (top-2 gaps > 0.05)
        assert torch.allclose(alone.target_logits, together.target_logits[[j]], atol=1e-5)
        assert alone.predicted.tolist() == together.predicted[[j]].tolist()
        assert alone.poison_fit.tolist() == together.poison_fit[[j]].tolist()


def _perfect(setup) -> PoisonedDataset:
    """Three targets, one poison each, whose images are the targets themselves (f(p) = f(t))."""
    result = _poisoned(setup)
    group = torch.tensor(result.extras["poison_target"])
    return _with_poison_images(result, result.targets.images[group])


def _keep_all(result: PoisonedDataset) -> torch.Tensor:
    return torch.ones(len(result.dataset), dtype=torch.bool)


def test_keeping_every_row_equals_no_filter(setup) -> None:
    model, _, test = setup
    result = _poisoned(setup, targets=3, per_target=2)
    config = TransferConfig(epochs=4, start="warm", seed=2)
    plain = evaluate_transfer(model, result, config=config, clean_test=test)
    kept = evaluate_transfer(model, result, config=config, clean_test=test, keep=_keep_all(result))
    assert torch.equal(plain.target_logits, kept.target_logits)
    assert torch.equal(plain.poison_fit, kept.poison_fit)
    assert torch.equal(plain.clean_accuracy, kept.clean_accuracy)
    assert kept.params["kept"] == len(result.dataset) and "kept" not in plain.params


def test_removed_clean_rows_equal_a_set_without_them(setup) -> None:
    model = setup[0]
    result = _poisoned(setup, targets=3)
    keep = _keep_all(result)
    keep[torch.tensor([0, 5, 7, 20])] = False  # clean rows
    config = TransferConfig(epochs=4, seed=1)
    filtered = evaluate_transfer(model, result, config=config, keep=keep)
    smaller = dataclasses.replace(
        result,
        dataset=result.dataset.subset(keep),
        is_poison=result.is_poison[keep],
        original_labels=result.original_labels[keep],
        source_index=result.source_index[keep],
        source_ids=result.source_ids[keep.numpy()],
    )
    alone = evaluate_transfer(model, smaller, config=config)
    assert torch.allclose(filtered.target_logits, alone.target_logits, atol=1e-5)


def test_a_target_whose_poison_was_removed_is_retrained_on_clean_data_only(setup) -> None:
    model, _, test = setup
    perfect = _perfect(setup)
    config = TransferConfig(epochs=500)
    hit = evaluate_transfer(model, perfect, config=config)
    assert hit.success.all()  # every collision works without a filter
    keep = _keep_all(perfect)
    keep[perfect.is_poison.nonzero().flatten()[0]] = False  # target 0's poison is filtered out
    filtered = evaluate_transfer(model, perfect, config=config, keep=keep, clean_test=test)
    assert filtered.success.tolist() == [False, True, True]
    assert torch.allclose(filtered.target_logits[1:], hit.target_logits[1:], atol=1e-5)
    nothing = keep & ~perfect.is_poison  # every poison filtered out: clean retrainings only
    clean_only = evaluate_transfer(model, perfect, config=config, keep=nothing)
    assert not clean_only.success.any()
    assert torch.allclose(filtered.target_logits[0], clean_only.target_logits[0], atol=1e-5)
    assert filtered.poison_fit[0] == 0.0  # the clean head does not call the poison its base


def test_a_bad_keep_mask_is_refused(setup) -> None:
    model = setup[0]
    result = _poisoned(setup)
    for bad, message in (
        (torch.ones(3, dtype=torch.bool), "one entry per row"),
        (torch.ones(len(result.dataset)), "bool mask"),
        (result.is_poison.clone(), "every clean row"),
    ):
        with pytest.raises(ConfigError, match=message):
            evaluate_transfer(model, result, config=TransferConfig(epochs=1), keep=bad)


def test_softmax_fast_path_equals_the_generic_vmapped_loss(setup) -> None:
    heads = [_HeadCall(copy.deepcopy(setup[0].head)) for _ in range(4)]  # 128-d features
    for i, head in enumerate(heads):
        torch.nn.init.normal_(head.head.fc.weight, generator=torch.Generator().manual_seed(i))
    params, buffers = stack_module_state(heads)
    template = copy.deepcopy(heads[0]).to("meta")
    x = torch.randn(4, 7, 128, generator=torch.Generator().manual_seed(9))
    y = torch.randint(0, 3, (4, 7), generator=torch.Generator().manual_seed(8))
    generic = vmap(lambda p, b, f, t: functional_call(template, (p, b), (f, t)))(
        params, buffers, x, y
    )
    fast = _softmax_losses(params)(params, buffers, x, y)
    direct = torch.stack([heads[i](x[i], y[i]) for i in range(4)])
    assert torch.allclose(fast, generic, atol=1e-6) and torch.allclose(fast, direct, atol=1e-6)


def test_lgm_heads_and_joint_retraining(setup) -> None:
    _, finetune, test = setup
    lgm = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, head="lgm", feature_dim=8), seed=1)
    result = _poisoned((lgm.eval(), finetune, test), targets=2)
    per_target = evaluate_transfer(lgm, result, config=TransferConfig(epochs=2), clean_test=test)
    assert per_target.success.shape == (2,) and per_target.clean_accuracy.shape == (2,)
    joint = evaluate_transfer(
        lgm, result, config=TransferConfig(epochs=2, per_target=False), clean_test=test
    )
    assert joint.clean_accuracy.shape == (1,) and joint.poison_fit.shape == (1,)
    report = json.loads(json.dumps(joint.to_dict()))
    assert report["protocol"] == "transfer" and report["success_rate"]["n"] == 2


def test_end_to_end_leaves_the_model_alone(setup) -> None:
    model, _, test = setup
    result = _poisoned(setup, targets=2, per_target=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=16, val_fraction=0.0, patience=None)
    joint = evaluate_end_to_end(model, result, config=config, clean_test=test)
    assert joint.protocol == "end-to-end" and joint.clean_accuracy.shape == (1,)
    per_target = evaluate_end_to_end(model, result, config=config, per_target=True)
    assert per_target.success.shape == (2,) and per_target.clean_accuracy is None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="val_fraction"):
        evaluate_end_to_end(model, result, config=TrainConfig(epochs=1))


def test_evaluation_needs_targets_and_valid_settings(setup) -> None:
    model = setup[0]
    result = _poisoned(setup)
    no_targets = dataclasses.replace(result, targets=None, target_labels=None)
    with pytest.raises(ConfigError, match="no targets"):
        evaluate_transfer(model, no_targets)
    uneven = dataclasses.replace(result, extras={"poison_target": [0, 0, 1]})
    with pytest.raises(ConfigError, match="same number of poisons"):
        evaluate_transfer(model, uneven)
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"start": "hot"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TransferConfig(**bad)


def test_seed000_setting_uses_one_set_of_pairs_for_both_models(setup) -> None:
    ce_model, finetune, _ = setup
    lgm = build_model(ModelConfig("cnn-small", 1, 8, 8, 3, head="lgm", feature_dim=2), seed=1)
    data = concatenate([finetune, _three_digits(range(360, 380))])
    result = run_seed000(ce_model, lgm.eval(), data, generator=make_generator(0),
                         num_targets=3, max_iter=3)  # fmt: skip
    for key in ("target_index", "base_index"):
        assert result.ce.extras[key] == result.lgm.extras[key]
    # Yaseen et al. 2020 draw their targets from D_f itself
    assert result.ce.extras["target_pool"] == "train"
    summary = result.summary()
    assert set(summary) == {"ce", "lgm", "pairs"} and summary["pairs"]["n"] == 3
    assert summary["ce"]["l2_mean_255"] == pytest.approx(255 * summary["ce"]["l2_mean"])
    poisons = result.ce.dataset.images[result.ce.is_poison].double()
    bases = data.images[torch.tensor(result.ce.extras["base_index"])].double()
    relative = ((poisons - bases).flatten(1).norm(dim=1) / bases.flatten(1).norm(dim=1)).mean()
    assert summary["ce"]["l2_relative_mean"] == pytest.approx(float(relative))
    attack = seed000_attack()
    assert attack.num_targets == 100 and attack.beta0 == 0.0083 and attack.pixel_scale == 2.0
    assert attack.lr == 3.825e7 and attack.normalize_features and attack.obj_threshold == 1e-4
    assert SEED000_SETTINGS["step_rule"] == "every-iteration"
