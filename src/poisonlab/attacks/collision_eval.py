"""Evaluation protocols for feature-collision poisons: transfer learning and end-to-end training.

Shafahi et al. 2018 (arXiv:1804.00792), §4: the victim retrains on its clean data plus the
poisons, and the attack succeeds when the target is then predicted as the base class.

- Transfer learning (the paper's "one-shot kill", official ``train_last_layer_of_inception``):
  the feature extractor is frozen and only the last layer (poisonlab's ``head``) is retrained —
  Adam, lr 0.01, batch 32, 100 epochs; "cold" starts from a fresh head, "warm" from the trained
  one. Features are computed once, and with ``per_target`` (one retraining per target and its own
  poisons, as in the paper) all the independent heads train side by side as one batched problem
  (``torch.func.vmap``; Adam is element-wise, so this equals training each head alone on the same
  mini-batch order). Works for softmax and LGM heads alike (their ``loss`` is used).
- End-to-end: every weight is fine-tuned (poisonlab's ``train_model``) on clean + poisons, once
  for all targets together or once per target.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from poisonlab.attacks.base import PoisonedDataset
from poisonlab.data.dataset import ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.metrics.collision import RateInterval, success_rate
from poisonlab.models.heads import SoftmaxHead
from poisonlab.models.network import Network
from poisonlab.models.registry import build_model
from poisonlab.seeding import make_generator
from poisonlab.train.config import TrainConfig
from poisonlab.train.loop import train_model

STARTS = ("cold", "warm")


@dataclass(frozen=True)
class TransferConfig:
    """Retraining of the last layer (defaults: the official one-shot-kill code).

    Parameters
    ----------
    epochs, batch_size : int
        Passes over clean + poisons, and mini-batch size (100 and 32).
    lr : float
        Adam learning rate (0.01).
    start : {"cold", "warm"}
        A freshly initialised head (seeded by ``seed``, the same for every target) or the
        model's trained head.
    per_target : bool
        Retrain once per target with only its own poisons (the paper), else once with all.
    seed : int
        Seeds the cold initialisation and the mini-batch order.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 0.01
    start: str = "cold"
    per_target: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.start not in STARTS:
            raise ConfigError(f"start {self.start!r} is not one of {', '.join(STARTS)}")


@dataclass(frozen=True, eq=False)
class CollisionEvaluation:
    """Outcome of one evaluation protocol, one entry per target.

    Attributes
    ----------
    protocol : str
        "transfer" or "end-to-end".
    success : Tensor (T,), bool
        The retrained model predicts the target as its base class.
    predicted, target_labels, true_labels : Tensor (T,), int64
        Prediction after retraining, the base class wanted, the target's true class.
    target_logits : Tensor (T, K)
        The retrained model's logits for each target (softmax gives its confidence).
    baseline_predicted : Tensor (T,), int64
        The original model's prediction (the control: it should rarely be the base class).
    rate : RateInterval
        Success rate with its confidence interval.
    clean_accuracy : Tensor (G,) or None
        Accuracy of each retrained model (G = T per target, else 1) on the clean test set.
    poison_fit : Tensor (G,)
        Fraction of each retraining's poisons predicted as their own (base) label afterwards;
        when it is low the victim could not fit the poisons, so their collision could not act.
    params : dict
        The protocol's settings.
    """

    protocol: str
    success: Tensor
    predicted: Tensor
    target_logits: Tensor
    target_labels: Tensor
    true_labels: Tensor
    baseline_predicted: Tensor
    rate: RateInterval
    clean_accuracy: Tensor | None
    poison_fit: Tensor
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with per-target lists."""
        acc = self.clean_accuracy
        return {
            "protocol": self.protocol,
            "success_rate": self.rate.to_dict(),
            "baseline_success": int((self.baseline_predicted == self.target_labels).sum()),
            "clean_accuracy_mean": float(acc.mean()) if acc is not None else None,
            "poison_fit_mean": float(self.poison_fit.mean()),
            "success": self.success.tolist(),
            "predicted": self.predicted.tolist(),
            "target_labels": self.target_labels.tolist(),
            "true_labels": self.true_labels.tolist(),
            "params": dict(self.params),
        }


def _check_poisoned(poisoned: PoisonedDataset) -> tuple[ImageDataset, Tensor, Tensor]:
    """(targets, target_labels, poison_target) of a feature-collision PoisonedDataset."""
    if poisoned.targets is None or poisoned.target_labels is None:
        raise ConfigError("the poisoned set carries no targets: not a feature-collision result")
    if poisoned.n_poison == 0 or poisoned.n_poison == len(poisoned.dataset):
        raise ConfigError("evaluation needs both clean rows and poisons in the poisoned set")
    group = poisoned.extras.get("poison_target")
    if group is None:
        group = torch.zeros(poisoned.n_poison, dtype=torch.long)
    group = torch.as_tensor(group, dtype=torch.long)
    if group.shape != (poisoned.n_poison,):
        raise ConfigError("extras['poison_target'] must give one target index per poison")
    return poisoned.targets, poisoned.target_labels.long(), group


def _groups(group: Tensor, num_targets: int, per_target: bool) -> Tensor:
    """Poison rows of each retraining, (G, k): one row per target, or all poisons in one row."""
    if not per_target:
        return torch.arange(len(group))[None]
    rows = [(group == j).nonzero().flatten() for j in range(num_targets)]
    if len({len(r) for r in rows}) != 1:
        raise ConfigError("per-target evaluation needs the same number of poisons for every target")
    return torch.stack(rows)


@torch.no_grad()
def _features(model: Network, images: Tensor, batch: int = 512) -> Tensor:
    """Penultimate features (N, D) on the model's device, computed in eval mode."""
    first = next(model.parameters())
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        parts = [
            model.features(images[i : i + batch].to(first.device, first.dtype))
            for i in range(0, len(images), batch)
        ]
    finally:
        for m, training in modes:
            m.training = training
    return torch.cat(parts) if parts else images.new_zeros((0, 0))


class _HeadCall(nn.Module):
    """Adapter so ``functional_call`` can reach a head's loss (with labels) or logits (without)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            return self.head(features)
        return self.head.loss(features, labels)[0]


def _softmax_losses(params: dict[str, Tensor]) -> Any:
    """Mean cross-entropy of each stacked softmax head, (G,): the same numbers as the vmapped
    generic path, about twice as fast (one batched matmul)."""
    weight, bias = params["head.fc.weight"], params["head.fc.bias"]  # (G, K, D), (G, K)

    def losses(_p: object, _b: object, x: Tensor, y: Tensor) -> Tensor:
        logits = torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))
        flat = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        return flat.view(y.shape).mean(1)

    return losses


def evaluate_transfer(
    model: Network,
    poisoned: PoisonedDataset,
    *,
    config: TransferConfig | None = None,
    clean_test: ImageDataset | None = None,
    confidence: float = 0.95,
) -> CollisionEvaluation:
    """Transfer-learning evaluation: retrain only the head on frozen features of clean + poisons.

    Parameters
    ----------
    model : Network
        The pre-trained victim; it is not modified (heads are trained on copies).
    poisoned : PoisonedDataset
        A feature-collision result (clean rows, poisons, targets, ``extras['poison_target']``).
    config : TransferConfig
    clean_test : ImageDataset or None
        Clean images to measure each retrained head's accuracy on.
    confidence : float
        Coverage of the Wilson interval on the success rate.
    """
    config = config or TransferConfig()
    targets, wanted, group = _check_poisoned(poisoned)
    rows = _groups(group, len(targets), config.per_target)
    mask = poisoned.is_poison
    data = poisoned.dataset
    clean_x = _features(model, data.images[~mask])
    device = clean_x.device
    clean_y = data.labels[~mask].to(device)
    poison_x = _features(model, data.images[mask])[rows.to(device)]  # (G, k, D)
    poison_y = data.labels[mask][rows].to(device)  # (G, k)
    target_x = _features(model, targets.images)
    head0 = (
        model.head if config.start == "warm" else build_model(model.config, seed=config.seed).head
    )
    stacked = [_HeadCall(copy.deepcopy(head0)).to(device, clean_x.dtype) for _ in range(len(rows))]
    params, buffers = stack_module_state(stacked)
    template = copy.deepcopy(stacked[0]).to("meta")

    def loss_one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return functional_call(template, (p, b), (x, y))

    def logits_one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(template, (p, b), (x,))

    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr)
    generator = make_generator(config.seed)
    n, k, g = len(clean_x), rows.shape[1], len(rows)
    batched_loss = _softmax_losses(params) if isinstance(head0, SoftmaxHead) else vmap(loss_one)
    for _ in range(config.epochs):
        order = torch.randperm(n + k, generator=generator).to(device)
        for start in range(0, n + k, config.batch_size):
            idx = order[start : start + config.batch_size]
            is_p = idx >= n
            x = clean_x[idx.clamp(max=n - 1)].expand(g, -1, -1).clone()
            y = clean_y[idx.clamp(max=n - 1)].expand(g, -1).clone()
            x[:, is_p] = poison_x[:, idx[is_p] - n]
            y[:, is_p] = poison_y[:, idx[is_p] - n]
            optimizer.zero_grad(set_to_none=True)
            batched_loss(params, buffers, x, y).sum().backward()
            optimizer.step()
    with torch.no_grad():
        if config.per_target:
            logits = vmap(logits_one)(params, buffers, target_x[:, None])[:, 0]
        else:
            logits = logits_one({k_: v[0] for k_, v in params.items()}, buffers, target_x)
        accuracy = None
        if clean_test is not None:
            test_x = _features(model, clean_test.images)
            test_logits = vmap(logits_one, in_dims=(0, 0, None))(params, buffers, test_x)
            hits = test_logits.argmax(-1) == clean_test.labels.to(device)[None]
            accuracy = hits.double().mean(1).cpu()
        poison_logits = vmap(logits_one)(params, buffers, poison_x)
        fit = (poison_logits.argmax(-1) == poison_y).double().mean(1).cpu()
        baseline = model.head(target_x).argmax(1).cpu()
    return _evaluation(
        "transfer", logits.cpu(), wanted, targets, baseline, accuracy, fit, confidence, vars(config)
    )


def _evaluation(
    protocol: str,
    logits: Tensor,
    wanted: Tensor,
    targets: ImageDataset,
    baseline: Tensor,
    accuracy: Tensor | None,
    fit: Tensor,
    confidence: float,
    params: dict[str, Any],
) -> CollisionEvaluation:
    predicted = logits.argmax(1)
    success = predicted == wanted
    return CollisionEvaluation(
        protocol=protocol,
        success=success,
        predicted=predicted,
        target_logits=logits.float(),
        target_labels=wanted.clone(),
        true_labels=targets.labels.clone(),
        baseline_predicted=baseline,
        rate=success_rate(success, confidence=confidence),
        clean_accuracy=accuracy,
        poison_fit=fit,
        params=dict(params),
    )


def evaluate_end_to_end(
    model: Network,
    poisoned: PoisonedDataset,
    *,
    config: TrainConfig | None = None,
    per_target: bool = False,
    clean_test: ImageDataset | None = None,
    confidence: float = 0.95,
) -> CollisionEvaluation:
    """End-to-end evaluation: fine-tune every weight of a copy of ``model`` on clean + poisons.

    ``config`` defaults to 10 epochs of Adam at lr 1e-4, batch 64, no validation split (a
    validation split could hold out the poisons, so ``val_fraction`` must be 0). With
    ``per_target`` the copy is retrained once per target with only that target's poisons (the
    paper's protocol, T times the cost); otherwise once with every poison.
    """
    config = config or TrainConfig(
        epochs=10, batch_size=64, lr=1e-4, val_fraction=0.0, patience=None, seed=0
    )
    if config.val_fraction != 0:
        raise ConfigError(
            "end-to-end evaluation needs val_fraction = 0 (poisons must be trained on)"
        )
    targets, wanted, group = _check_poisoned(poisoned)
    rows = _groups(group, len(targets), per_target)
    mask = poisoned.is_poison
    poison_rows = mask.nonzero().flatten()
    clean_rows = (~mask).nonzero().flatten()
    target_logits = torch.empty(len(targets), model.config.num_classes)
    accuracy = torch.empty(len(rows), dtype=torch.float64)
    fit = torch.empty(len(rows), dtype=torch.float64)
    device = next(model.parameters()).device
    for j, members in enumerate(rows):
        victim = copy.deepcopy(model)
        keep = torch.cat([clean_rows, poison_rows[members]])
        train_model(victim, poisoned.dataset.subset(keep), config, device=device)
        victim.eval()
        dtype = next(victim.parameters()).dtype
        with torch.no_grad():
            logits = victim(targets.images.to(device, dtype)).cpu()
            chosen = poisoned.dataset.subset(poison_rows[members])
            fit[j] = (
                (victim(chosen.images.to(device, dtype)).argmax(1).cpu() == chosen.labels)
                .double()
                .mean()
            )
            if clean_test is not None:
                test_images = clean_test.images.to(device, dtype)
                hits = victim(test_images).argmax(1).cpu() == clean_test.labels
                accuracy[j] = hits.double().mean()
        if per_target:
            target_logits[j] = logits[j]
        else:
            target_logits = logits.float()
    with torch.no_grad():
        first = next(model.parameters())
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        baseline = model(targets.images.to(first.device, first.dtype)).argmax(1).cpu()
        for m, training in modes:
            m.training = training
    params = {**config.to_dict(), "per_target": per_target}
    return _evaluation(
        "end-to-end",
        target_logits,
        wanted,
        targets,
        baseline,
        accuracy if clean_test is not None else None,
        fit,
        confidence,
        params,
    )
