"""One training loop for softmax, LGM and Bayesian networks: Adam or SGD, validation, early stopping.

:func:`run_epochs` is the mini-batch loop every trainer uses (:func:`train_model` here, the ELBO
fine-tuning of :mod:`poisonlab.train.elbo`); what differs between them is a hook: an extra
loss term (the KL divergence) and the mode the modules train in.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from poisonlab import progress
from poisonlab.data.dataset import DATASET, ImageDataset
from poisonlab.data.splits import split_indices
from poisonlab.device import pick_device
from poisonlab.errors import ConfigError
from poisonlab.models.network import NETWORK, Network
from poisonlab.ranges import counted
from poisonlab.seeding import make_generator, seeded_global_rng
from poisonlab.train.config import TrainConfig
from poisonlab.train.evaluate import evaluate
from poisonlab.validation import InstanceOf, check_param

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochRecord:
    """Losses and accuracies of one epoch (validation fields are None without a validation set)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


@dataclass(frozen=True, repr=False)
class TrainResult:
    """What a training run did: per-epoch history, the epoch whose weights were kept, timing."""

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    def __repr__(self) -> str:
        """One line, e.g. ``TrainResult(9 epochs, stopped early; kept epoch 4: val_loss 0.0812,
        val_accuracy 0.9777; 0.08 s per epoch)``; it printed every epoch's record (``history``)."""
        kept = next((r for r in self.history if r.epoch == self.best_epoch), None)
        stopped = ", stopped early" if self.stopped_early else ""
        measured = ""
        if kept is not None:
            loss, accuracy = (
                ("val_loss", "val_accuracy")
                if kept.val_loss is not None
                else ("train_loss", "train_accuracy")
            )
            measured = (
                f": {loss} {getattr(kept, loss):.4g}, {accuracy} {getattr(kept, accuracy):.4g}"
            )
        return (
            f"TrainResult({counted(len(self.history), 'epoch', 'epochs')}"
            f"{stopped}; kept epoch {self.best_epoch}"
            f"{measured}; {self.seconds_per_epoch:.3g} s per epoch)"
        )

    @property
    def seconds_per_epoch(self) -> float:
        """Mean wall-clock seconds per epoch."""
        return sum(r.seconds for r in self.history) / max(len(self.history), 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "seconds_per_epoch": round(self.seconds_per_epoch, 3),
            "history": [r.__dict__ for r in self.history],
        }


def _optimizer(model: Network, config: TrainConfig, trainable: list[nn.Parameter]) -> Any:
    """Adam or SGD with the head in its own parameter group when ``head_lr`` is set."""
    wanted = {id(p) for p in trainable}
    head_ids = {id(p) for p in model.head.parameters()}
    body = [p for p in trainable if id(p) not in head_ids]
    head = [p for p in model.head.parameters() if id(p) in wanted]
    groups: list[dict[str, Any]] = [g for g in ({"params": body}, {"params": head}) if g["params"]]
    if config.head_lr is not None and head:
        groups[-1]["lr"] = config.head_lr
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def _split_validation(data: ImageDataset, config: TrainConfig) -> tuple[Tensor, Tensor | None]:
    if config.val_fraction == 0:
        return torch.arange(len(data)), None
    train_idx, val_idx = split_indices(
        data.labels, (1.0 - config.val_fraction, config.val_fraction), config.seed
    )
    return train_idx, (val_idx if len(val_idx) else None)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or nothing when ``dtype`` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


#: An extra loss term of the model, added to its own loss per mini-batch (e.g. the ELBO's KL).
Penalty = Callable[[nn.Module], Tensor]


@dataclass(frozen=True)
class EpochStats:
    """One pass over the training data by :func:`run_epochs` (means over its samples)."""

    epoch: int
    loss: float
    penalty: float
    accuracy: float
    seconds: float


def run_epochs(
    model: Network,
    images: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    modules: Literal["train", "eval"] = "train",
    penalty: Penalty | None = None,
    penalty_weight: float = 1.0,
    description: str = "training",
    autocast: torch.dtype | None = None,
) -> Generator[EpochStats, None, None]:
    """The one mini-batch loop of poisonlab; yields after every epoch (the caller may stop early).

    Per epoch the rows are shuffled by a generator seeded with ``seed``; per mini-batch the loss
    is the model's own (cross-entropy, or the LGM loss for an LGM head), plus ``penalty_weight ·
    penalty(model)`` when a penalty is given. Everything that draws from torch's global RNG
    (dropout, Flipout weight samples) runs inside a fork of it seeded with ``seed``, so results
    repeat and the caller's random state is left alone. ``modules`` is the mode of every module
    while training: "train" (dropout on, BatchNorm updating its statistics; set again at the start
    of each epoch) or "eval" (e.g. fine-tuning a Bayesian copy, where the weight posterior must
    be the only randomness and BatchNorm keeps its statistics). ``autocast`` (e.g. torch.bfloat16)
    runs each forward pass and loss under ``torch.autocast`` in that dtype (mixed precision: the
    weights and their gradients stay float32). Gradients are cleared at the end.

    Yields
    ------
    EpochStats
        ``loss`` is the model's own loss and ``penalty`` the unweighted penalty, both averaged
        over the samples; ``accuracy`` that of the training-mode logits.
    """
    n = len(images)
    generator = make_generator(seed)
    steps = epochs * ((n + batch_size - 1) // batch_size)
    if modules == "eval":
        model.eval()
    try:
        with seeded_global_rng(seed), progress.bar(description, total=steps) as bar:
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                if modules == "train":
                    model.train()
                order = torch.randperm(n, generator=generator).to(images.device)
                loss_sum = penalty_sum = 0.0
                correct = 0
                for first in range(0, n, batch_size):
                    batch = order[first : first + batch_size]
                    with _autocast(images.device, autocast):
                        loss, logits = model.loss(images[batch], labels[batch])
                    extra = penalty(model) if penalty is not None else None
                    total = loss + penalty_weight * extra if extra is not None else loss
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    optimizer.step()
                    loss_value = float(loss.detach())
                    loss_sum += loss_value * len(batch)
                    correct += int((logits.argmax(1) == labels[batch]).sum())
                    info = f"epoch {epoch} loss {loss_value:.3f}"
                    if extra is not None:
                        penalty_value = float(extra.detach())
                        penalty_sum += penalty_value * len(batch)
                        info += f" penalty {penalty_value:.3f}"
                    bar.advance(1, info=info)
                yield EpochStats(
                    epoch, loss_sum / n, penalty_sum / n, correct / n, time.perf_counter() - start
                )
    finally:
        optimizer.zero_grad(set_to_none=True)


_RECIPE = "a TrainConfig (e.g. poisonlab.train.recipes.default_recipe(...))"


def train_model(
    model: Network,
    data: ImageDataset,
    config: TrainConfig | None = None,
    *,
    val_data: ImageDataset | None = None,
    device: torch.device | str | None = None,
    trainable: list[nn.Parameter] | None = None,
    description: str = "training",
) -> TrainResult:
    """Train ``model`` in place on ``data`` and return its history.

    A validation set is ``val_data`` when given, else a stratified ``config.val_fraction`` of
    ``data``. With validation, the weights of the epoch with the lowest validation loss are kept,
    and training stops after ``config.patience`` epochs without improvement. ``trainable``
    restricts which parameters move (e.g. only the last layer for transfer learning); the others
    stay frozen. Dropout draws from torch's global RNG, seeded with ``config.seed`` inside the
    loop and restored afterwards: runs repeat for a seed and the caller's random state is untouched.
    The mini-batch loop is :func:`run_epochs`.
    """
    check_param("train_model", "model", model, [NETWORK])
    check_param("train_model", "data", data, [DATASET])
    check_param("train_model", "config", config, [InstanceOf(TrainConfig, _RECIPE), None])
    check_param("train_model", "val_data", val_data, [DATASET, None])
    config = config or TrainConfig()
    device = pick_device(device)
    if data.shape != model.config.input_shape:
        raise ConfigError(
            f"data {data.name!r} has images {data.shape}, model expects {model.config.input_shape}"
        )
    model.to(device)
    mixed = torch.bfloat16 if config.precision == "bfloat16" else None
    channels_last = _channels_last(model, device, mixed)
    params = trainable if trainable is not None else list(model.parameters())
    frozen = [p for p in model.parameters() if all(p is not q for q in params)]
    saved_flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = _optimizer(model, config, params)
    if val_data is None:
        train_idx, val_idx = _split_validation(data, config)
        train_part = data.subset(train_idx)
        val_part = data.subset(val_idx) if val_idx is not None else None
    else:
        train_part, val_part = data, val_data
    history: list[EpochRecord] = []
    best_loss, best_state, best_epoch, since_best = float("inf"), None, 0, 0
    stopped = False
    epochs = run_epochs(
        model,
        train_part.images.to(device),
        train_part.labels.to(device),
        optimizer,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        description=description,
        autocast=mixed,
    )
    try:
        for stats in epochs:
            val = evaluate(model, val_part, device=device) if val_part is not None else None
            record = EpochRecord(
                stats.epoch,
                stats.loss,
                stats.accuracy,
                val.loss if val else None,
                val.accuracy if val else None,
                stats.seconds,
            )
            history.append(record)
            log.debug("epoch %d: %s", stats.epoch, record)
            if val is None:
                best_epoch = stats.epoch
                continue
            if val.loss < best_loss - 1e-6:
                best_loss, best_epoch, since_best = val.loss, stats.epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if config.patience is not None and since_best >= config.patience:
                    stopped = True
                    break
    finally:
        epochs.close()
        for p, flag in zip(frozen, saved_flags, strict=True):
            p.requires_grad_(flag)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(history, best_epoch, stopped)


def _channels_last(model: Network, device: torch.device, autocast: torch.dtype | None) -> bool:
    """Put the convolution weights in channels-last layout for bfloat16 training on the CPU
    (oneDNN's bfloat16 convolutions run faster on it: 2 epochs of cnn-small on 60,000
    Fashion-MNIST images 34.6 s against 40.8 s, bench/results/scan_scale.md);
    :func:`train_model` restores the usual layout afterwards, so the trained model is laid out as
    before. Returns whether it did."""
    if autocast is None or device.type != "cpu":
        return False
    model.to(memory_format=torch.channels_last)
    return True
