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
from poisonlab.models.borrow import borrowed
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

    @classmethod
    def warm_per_target(cls, schedule: TrainConfig) -> TransferConfig:
        """Poison Frogs' per-target retraining of the trained head, on ``schedule``'s epochs,
        batch size, learning rate and seed (what the filter-and-fine-tune loops compare)."""
        return cls(
            epochs=schedule.epochs,
            batch_size=schedule.batch_size,
            lr=schedule.lr,
            start="warm",
            per_target=True,
            seed=schedule.seed,
        )


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
        raise ConfigError(
            f"the {poisoned.attack!r} poisoned set carries no targets: not a feature-collision "
            "result, or a poisoned.npz written before poisonlab saved them (run the attack again)"
        )
    if poisoned.n_poison == 0 or poisoned.n_poison == len(poisoned.dataset):
        raise ConfigError("evaluation needs both clean rows and poisons in the poisoned set")
    group = poisoned.extras.get("poison_target")
    if group is None and len(poisoned.targets) > 1:  # which poison aims at which target
        raise ConfigError(
            f"extras['poison_target'] must give one target index per poison: "
            f"{len(poisoned.targets)} targets and no poison_target"
        )
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
    with borrowed(model):
        parts = [
            model.features(images[i : i + batch].to(first.device, first.dtype))
            for i in range(0, len(images), batch)
        ]
    return torch.cat(parts) if parts else images.new_zeros((0, 0))


class _HeadCall(nn.Module):
    """Adapter so ``functional_call`` can reach a head's loss (with labels) or logits (without)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head: Any = head  # a SoftmaxHead or LGMHead: both have .loss

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
    keep: Tensor | None = None,
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
    keep : Tensor (N,) of bool, or None
        The rows of ``poisoned.dataset`` a defense kept (the filtered set D_w); None keeps all.
        Each retraining then uses the kept clean rows and its own kept poisons, exactly as if it
        had been run alone on them: a target whose poisons were all removed is retrained on kept
        clean data only, so its success is that of a clean retraining. ``poison_fit`` still
        covers every poison of a group (would the retrained head call it its base class?).
    """
    config = config or TransferConfig()
    targets, wanted, group = _check_poisoned(poisoned)
    rows = _groups(group, len(targets), config.per_target)
    mask = poisoned.is_poison
    data = poisoned.dataset
    kept = torch.ones(len(data), dtype=torch.bool) if keep is None else _check_keep(keep, mask)
    clean_x = _features(model, data.images[~mask & kept])
    device = clean_x.device
    clean_y = data.labels[~mask & kept].to(device)
    all_poison_x = _features(model, data.images[mask])
    all_poison_y = data.labels[mask].to(device)
    kept_poisons = kept[mask]
    target_x = _features(model, targets.images)
    head0 = (
        model.head if config.start == "warm" else build_model(model.config, seed=config.seed).head
    )
    g = len(rows)
    logits = torch.empty(len(targets), model.config.num_classes, dtype=clean_x.dtype)
    fit = torch.empty(g, dtype=torch.float64)
    accuracy = torch.empty(g, dtype=torch.float64) if clean_test is not None else None
    test_x = _features(model, clean_test.images) if clean_test is not None else None
    # Retrainings with the same number of surviving poisons train side by side, each exactly as it
    # would alone (own seed, own mini-batch order); without a filter that is one batch of all.
    survivors = [rows[j][kept_poisons[rows[j]]] for j in range(g)]
    for m in sorted({len(s) for s in survivors}):
        members = [j for j in range(g) if len(survivors[j]) == m]
        chosen = torch.stack([survivors[j] for j in members]).to(device)  # (G_m, m)
        heads = _train_heads(
            head0, clean_x, clean_y, all_poison_x[chosen], all_poison_y[chosen], config
        )
        with torch.no_grad():
            index = torch.tensor(members)
            if config.per_target:
                logits[index] = heads.logits(target_x[index][:, None])[:, 0].cpu()
            else:
                logits[:] = heads.logits_one(0, target_x).cpu()
            if test_x is not None and accuracy is not None and clean_test is not None:
                test_logits = heads.logits_shared(test_x)
                hits = test_logits.argmax(-1) == clean_test.labels.to(device)[None]
                accuracy[index] = hits.double().mean(1).cpu()
            poison_logits = heads.logits(all_poison_x[rows[index].to(device)])
            own = all_poison_y[rows[index].to(device)]
            fit[index] = (poison_logits.argmax(-1) == own).double().mean(1).cpu()
    with torch.no_grad():
        baseline = model.head(target_x).argmax(1).cpu()
    params = dict(vars(config))
    if keep is not None:
        params["kept"] = int(kept.sum())
    return _evaluation(
        "transfer", logits, wanted, targets, baseline, accuracy, fit, confidence, params
    )


def _check_keep(keep: Tensor, is_poison: Tensor) -> Tensor:
    """``keep`` as a bool mask over the poisoned set's rows; ConfigError when it cannot be one."""
    keep = torch.as_tensor(keep)
    if keep.dtype != torch.bool or keep.shape != is_poison.shape:
        raise ConfigError(
            f"keep must be a bool mask with one entry per row ({tuple(is_poison.shape)}), "
            f"got {keep.dtype} {tuple(keep.shape)}"
        )
    if not bool((keep & ~is_poison).any()):
        raise ConfigError("keep removes every clean row: nothing is left to retrain the head on")
    return keep.cpu()


@dataclass(frozen=True, eq=False)
class _Heads:
    """G heads trained side by side (stacked parameters) and how to call them."""

    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    template: nn.Module

    def _call(self, p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.template, (p, b), (x,))

    def logits(self, x: Tensor) -> Tensor:
        """Logits of head g on ``x[g]``: x (G, n, D) → (G, n, K)."""
        return vmap(self._call)(self.params, self.buffers, x)

    def logits_shared(self, x: Tensor) -> Tensor:
        """Logits of every head on the same ``x`` (n, D) → (G, n, K)."""
        return vmap(self._call, in_dims=(0, 0, None))(self.params, self.buffers, x)

    def logits_one(self, g: int, x: Tensor) -> Tensor:
        """Logits of head ``g`` on ``x`` (n, D) → (n, K)."""
        return self._call({k: v[g] for k, v in self.params.items()}, self.buffers, x)


def _train_heads(
    head0: nn.Module,
    clean_x: Tensor,
    clean_y: Tensor,
    poison_x: Tensor,
    poison_y: Tensor,
    config: TransferConfig,
) -> _Heads:
    """Train G copies of ``head0`` side by side, copy g on the clean rows plus ``poison_x[g]``.

    poison_x (G, k, D) and poison_y (G, k) may have k = 0 (clean data only). Every copy sees the
    mini-batch order of a generator seeded with ``config.seed`` over its n + k rows, so it equals
    training that copy alone.
    """
    device = clean_x.device
    g, k = poison_x.shape[0], poison_x.shape[1]
    stacked = [_HeadCall(copy.deepcopy(head0)).to(device, clean_x.dtype) for _ in range(g)]
    params, buffers = stack_module_state(stacked)
    template = copy.deepcopy(stacked[0]).to("meta")

    def loss_one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return functional_call(template, (p, b), (x, y))

    optimizer = torch.optim.Adam(list(params.values()), lr=config.lr)
    generator = make_generator(config.seed)
    n = len(clean_x)
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
    return _Heads(params, buffers, template)


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
    with torch.no_grad(), borrowed(model):
        first = next(model.parameters())
        baseline = model(targets.images.to(first.device, first.dtype)).argmax(1).cpu()
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
