"""L∞ projected gradient ascent on a model's cross-entropy: the "make it hard" step of Turner et al.

x_{t+1} = Π(x_t + α·sign(∇_x CE(g(x_t), y))), where Π projects onto the intersection of the L∞ ball
of radius ε around the original image x_0 and the pixel box [0, 1]. Both sets are boxes, so the
projection is exact: clamp to [max(0, x_0 - ε), min(1, x_0 + ε)] per pixel. There is no random start
(Turner et al. and Schulth et al. 2022 start from the clean image). Schulth et al. 2022's loop has
no effective projection (its L2 ε = 300 never binds), so its bound is steps·α = 5·0.015 = 0.075 in
L∞; here ε is a real, separate parameter (docs/methods.md#pgd-hardening).

The model is used in eval mode (no dropout, batch-norm statistics frozen), its parameters get no
gradients and its mode and ``requires_grad`` flags are restored afterwards. Each sample's ascent
is independent, so processing in batches gives the same result as one batch of everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poisonlab.errors import ConfigError
from poisonlab.models.borrow import borrowed
from poisonlab.validation import (
    POSITIVE_INT,
    ConstraintList,
    Interval,
    check_param,
    validate_params,
)


@dataclass(frozen=True, eq=False)
class PGDResult:
    """Perturbed images and the surrogate's loss on each image before and after.

    Parameters
    ----------
    images : Tensor of shape (N, C, H, W), float32 in [0, 1], CPU
    loss_before, loss_after : Tensor of shape (N,), float32, CPU
        Per-image cross-entropy of the model on the original and the perturbed images.
    """

    images: Tensor
    loss_before: Tensor
    loss_after: Tensor


PGD_CONSTRAINTS: dict[str, ConstraintList] = {
    "eps": [
        Interval(
            Real, 0, 1, closed="right", what="a number in (0, 1] (L∞ radius, [0, 1] pixel scale)"
        )
    ],
    "steps": [Interval(Integral, 0, 10_000)],
    "step_size": [Interval(Real, 0, 1, closed="right")],
}
"""The PGD settings: ε and α on the [0, 1] pixel scale, at most 10,000 steps (0 = no ascent)."""


def check_pgd_params(
    eps: float, steps: int, step_size: float, *, owner: str = "pgd"
) -> tuple[float, int, float]:
    """(eps, steps, step_size) normalised; ParameterError naming the parameter and its range."""
    checked = validate_params(
        owner, PGD_CONSTRAINTS, {"eps": eps, "steps": steps, "step_size": step_size}
    )
    return checked["eps"], checked["steps"], checked["step_size"]


def project_linf(x: Tensor, origin: Tensor, eps: float) -> Tensor:
    """Project ``x`` onto {z : ||z - origin||_∞ <= eps, 0 <= z <= 1} (exact: both are boxes)."""
    lower = (origin - eps).clamp_min(0.0)
    upper = (origin + eps).clamp_max(1.0)
    return torch.maximum(torch.minimum(x, upper), lower)


def _ascend(
    model: nn.Module, x0: Tensor, y: Tensor, eps: float, steps: int, alpha: float
) -> Tensor:
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = project_linf(x + alpha * grad.sign(), x0, eps)
    return x.detach()


@torch.no_grad()
def _losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y, reduction="none").float()


def pgd_maximize_loss(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    batch_size: int = 256,
) -> PGDResult:
    """Perturb ``images`` to maximise the cross-entropy of ``model`` on ``labels`` (L∞ PGD).

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) images to (B, K) logits; left unchanged.
    images : Tensor of shape (N, C, H, W), float in [0, 1]
    labels : Tensor of shape (N,), int64
        The labels whose loss is increased (the images' own labels).
    eps : float in (0, 1]
        L∞ radius on the [0, 1] pixel scale (Schulth et al. 2022's effective bound: 0.075).
    steps : int >= 0
        Sign-gradient steps (Schulth et al. 2022: 5); 0 returns the images unchanged.
    step_size : float in (0, 1]
        α per step (Schulth et al. 2022: 0.015).
    batch_size : int >= 1
        Images per forward/backward pass (the result does not depend on it).
        The computation runs where the model's parameters are (CUDA when the model is there).

    Returns
    -------
    PGDResult with CPU tensors.
    """
    eps, steps, step_size = check_pgd_params(eps, steps, step_size)
    batch_size = check_param("pgd", "batch_size", batch_size, [POSITIVE_INT])
    if images.ndim != 4 or labels.shape != (len(images),):
        raise ConfigError("pgd needs images (N, C, H, W) and labels (N,)")
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    outputs, before, after = [], [], []
    with borrowed(model, freeze=True):
        for first in range(0, len(images), batch_size):
            x0 = images[first : first + batch_size].to(device)
            y = labels[first : first + batch_size].to(device)
            x = _ascend(model, x0, y, float(eps), steps, float(step_size))
            before.append(_losses(model, x0, y).cpu())
            after.append(_losses(model, x, y).cpu())
            outputs.append(x.cpu())
    if not outputs:
        empty = torch.empty(0)
        return PGDResult(images.clone(), empty, empty.clone())
    return PGDResult(torch.cat(outputs).to(images.dtype), torch.cat(before), torch.cat(after))
