"""Inference helpers: logits in batches, loss and accuracy on a dataset."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from poisonlab.data.dataset import DATASET, ImageDataset
from poisonlab.errors import ConfigError
from poisonlab.models.borrow import borrowed
from poisonlab.models.network import Network
from poisonlab.validation import check_param, short_repr


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy of the inference logits and accuracy on one dataset."""

    loss: float
    accuracy: float
    n: int


@torch.no_grad()
def predict_logits(
    model: Network,
    images: Tensor,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 512,
) -> Tensor:
    """Inference logits for ``images`` (eval mode, every module's mode restored after), CPU (N, K)."""
    if not isinstance(images, Tensor):  # a data set (its .images), a list, a path...
        hint = ": pass its .images" if isinstance(images, ImageDataset) else ""
        raise ConfigError(
            f"predict images must be a float tensor (N, C, H, W), got {type(images).__name__}"
            f"{hint or ' ' + short_repr(images)}"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with borrowed(model):
        parts = [
            model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    if not parts:
        return torch.empty(0, model.config.num_classes)
    return torch.cat(parts)


def predict(
    model: Network,
    images: Tensor,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 512,
) -> Tensor:
    """Predicted class per image, int64 (N,), on the CPU (:func:`predict_logits`'s argmax)."""
    return predict_logits(model, images, device=device, batch_size=batch_size).argmax(1)


def evaluate(
    model: Network,
    data: ImageDataset,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 512,
) -> Evaluation:
    """Loss (cross-entropy of the inference logits) and accuracy of ``model`` on ``data``."""
    check_param("evaluate", "data", data, [DATASET])
    logits = predict_logits(model, data.images, device=device, batch_size=batch_size)
    if len(data) == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    loss = float(F.cross_entropy(logits, data.labels))
    accuracy = float((logits.argmax(1) == data.labels).float().mean())
    return Evaluation(loss, accuracy, len(data))
