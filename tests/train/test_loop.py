"""The training loop learns, repeats under a seed, stops early, respects frozen layers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model
from poisonlab.train import EpochRecord, TrainConfig, TrainResult, evaluate, train_model
from tests.conftest import blobs_dataset


def _model(head: str = "softmax", arch: str = "cnn-small"):
    return build_model(ModelConfig(arch, 1, 8, 8, 3, head=head), seed=0)


@pytest.mark.parametrize("head", ["softmax", "lgm"])
def test_learns_an_easy_task(head: str) -> None:
    data = blobs_dataset()
    model = _model(head)
    result = train_model(model, data, TrainConfig(epochs=15, batch_size=32, val_fraction=0.2))
    assert evaluate(model, blobs_dataset(seed=1)).accuracy >= 0.95
    assert result.history[0].val_loss is not None and not model.training


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    data = blobs_dataset()
    # no validation part: the seed can only act through the shuffling and dropout
    config = TrainConfig(epochs=2, batch_size=16, seed=5, val_fraction=0.0, patience=None)
    a, b, c = _model(), _model(), _model()
    train_model(a, data, config)
    train_model(b, data, config)
    train_model(c, data, replace(config, seed=6))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    weights = [[p.detach() for p in m.head.parameters()] for m in (a, c)]
    assert not all(torch.equal(p, q) for p, q in zip(*weights, strict=True))


def test_the_callers_random_state_is_untouched() -> None:
    """Dropout is seeded inside a forked RNG: the caller's stream continues as if no training ran,
    and the weights do not depend on it."""
    data = blobs_dataset(n_per_class=10)
    config = TrainConfig(epochs=1, batch_size=16, seed=3)
    weights = []
    for outer in (0, 1):
        with torch.random.fork_rng():
            torch.manual_seed(outer)
            before = torch.random.get_rng_state()
            model = _model()
            train_model(model, data, config)
            assert torch.equal(torch.random.get_rng_state(), before)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(p, q) for p, q in zip(*weights, strict=True))


def test_early_stopping_restores_the_best_epoch() -> None:
    data = blobs_dataset()
    model = _model()
    config = TrainConfig(epochs=40, batch_size=16, lr=0.05, patience=2)  # lr high: loss wanders
    result = train_model(model, data, config)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 2
    best = min(r.val_loss for r in result.history)
    assert result.history[result.best_epoch - 1].val_loss == best


def test_frozen_parameters_do_not_move() -> None:
    model = _model()
    body_before = {k: v.clone() for k, v in model.body.state_dict().items()}
    head_before = model.head.fc.weight.clone()
    trainable = list(model.head.parameters())
    train_model(model, blobs_dataset(), TrainConfig(epochs=2), trainable=trainable)
    for k, v in model.body.state_dict().items():
        assert torch.equal(v, body_before[k])
    assert not torch.equal(model.head.fc.weight, head_before)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_head_gets_its_own_learning_rate() -> None:
    from poisonlab.train.loop import _optimizer

    model = _model("lgm")
    opt = _optimizer(model, TrainConfig(lr=1e-3, head_lr=1e-2), list(model.parameters()))
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert opt.param_groups[1]["params"][0] is model.head.means


def test_shape_mismatch_and_bad_config_are_clear() -> None:
    model = build_model(ModelConfig("cnn-small", 3, 8, 8, 3))
    with pytest.raises(ConfigError, match=r"model expects \(3, 8, 8\)"):
        train_model(model, blobs_dataset(), TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")


def test_bfloat16_precision_trains_in_mixed_precision() -> None:
    """Convolutions run in bfloat16 inside the steps; weights stay float32, the model still
    learns, and inference afterwards is float32."""
    data = blobs_dataset()
    model = _model()
    seen: list[torch.dtype] = []
    handle = model.body.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    config = TrainConfig(epochs=15, batch_size=32, val_fraction=0.2, precision="bfloat16")
    train_model(model, data, config)
    handle.remove()
    assert torch.bfloat16 in seen  # the training steps
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    assert evaluate(model, blobs_dataset(seed=1)).accuracy >= 0.95
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="float16")


def test_a_training_result_prints_as_one_line() -> None:
    """It printed every epoch's record (20 by default), each float in full."""
    records = [EpochRecord(e, 1.0 / e, 0.5, 2.0 / e, 0.9 + e / 1000, 0.08) for e in range(1, 21)]
    text = repr(TrainResult(records, best_epoch=12, stopped_early=True))
    assert text == (
        "TrainResult(20 epochs, stopped early; kept epoch 12: val_loss 0.1667, val_accuracy "
        "0.912; 0.08 s per epoch)"
    )
    no_val = [EpochRecord(1, 0.25, 0.75, None, None, 1.5)]
    assert repr(TrainResult(no_val, best_epoch=1)) == (
        "TrainResult(1 epoch; kept epoch 1: train_loss 0.25, train_accuracy 0.75; 1.5 s per epoch)"
    )
