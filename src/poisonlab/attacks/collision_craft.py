"""Batched forward-backward splitting for feature-collision poisons (the numerics of Poison Frogs).

Shafahi et al., "Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks",
NeurIPS 2018 (arXiv:1804.00792), Algorithm 1, as run by the authors' code
(ashafahi/inceptionv3-transferLearn-poison) and by Yaseen et al. 2020
(muneebaadil/likelihoods-for-poison).

Iteration. For each poison (target t, base b), starting from x = b: a forward (gradient) step on
the un-squared feature distance h(x) = ||f(x) - f(t)||, x̂ = x - λ·∇h(x), as both codes take
it; then the backward (proximal) step of the pixel penalty, x ← (x̂ + λβ·b) / (1 + λβ), and
clipping to the pixel box. The paper writes the objective as ||f(x) - f(t)||² + β||x - b||²;
these steps minimise S(x) = h(x) + (β/2)·||x - b||².

Step-size control. A candidate is rejected, and that poison's λ multiplied by ``decay``, when its
objective does not improve on a reference (``step_rule``). The objective is S ("splitting", the
default: the function the steps minimise, so small enough steps are always accepted) or, as in
both codes, O(x) = h(x) + β·||x - b|| ("official"). O is not what the steps minimise: at x = b
its pixel term grows like β·||x - b|| while h falls only like ||∇h||·||x - b||, so when
||∇h|| < β every step is rejected and the poison never leaves its base.

Batching. Many poisons are optimised as one batch, but each has its own λ, its own accept /
reject decision, objective history and stopping test, so the batch gives the same poisons as
crafting each alone up to floating point (on digits, float32: ≤ 3e-4 in L2 with the default rule;
float64: 1e-13). This needs a model whose eval-mode outputs are per-sample independent (conv,
linear, pooling, dropout and batch-norm in eval mode are).

Units. Images are in [0, 1]. ``lr`` (λ) and ``beta0`` are given on a reference pixel scale of width
``pixel_scale`` (255 for the paper's [0, 255] images, 2 for Yaseen et al. 2020's [-1, 1], 1 for [0,
1]). The iteration on [0, 1] images uses λ/pixel_scale² and the same product λβ, which reproduces
the reference iterates exactly (divided by pixel_scale); objectives measure ||x - b|| in reference
units (pixel_scale·||x - b||). On [0, 1] pixels the penalty weight is β·pixel_scale², and a poison
that has not collided settles where
||x - b|| ≈ ||∇h|| / (β·pixel_scale²). β = β0·(2048/D_in)² ("paper"; 2048 is InceptionV3's
feature width, kept literally as Yaseen et al. 2020 does), β0·(D_feat/D_in)² ("feature-dim", IBM
ART's variant, default β0 there 256) or β0 ("none"); D_in = C·H·W, D_feat = the feature layer's
width.

Defaults are Yaseen et al. 2020's MNIST setting (β0 = 0.0083 on [-1, 1]: β·pixel_scale² ≈ 0.23 for
28×28 images). The paper's β0 = 0.25 with λ = 500·255 on [0, 255] is tuned for 299×299×3 InceptionV3
inputs (β·255² ≈ 0.95); the (2048/D_in)² factor grows so fast for small images (≈ 1.1e5 for 28×28,
1.7e7 for 8×8) that the poisons cannot move, so choose β0 for the image size at hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from poisonlab.errors import ConfigError
from poisonlab.models.activations import resolve_layers
from poisonlab.models.borrow import borrowed
from poisonlab.validation import (
    FRACTION,
    LAYER,
    POSITIVE,
    POSITIVE_INT,
    ConstraintList,
    Options,
    validate_params,
)

BETA_SCALINGS = ("paper", "feature-dim", "none")
STEP_RULES = ("every-iteration", "mean-of-last")
OBJECTIVES = ("splitting", "official")
WATERMARK_MODES = ("blend", "additive")
PAPER_FEATURE_DIM = 2048
SETTINGS_CONSTRAINTS: dict[str, ConstraintList] = {
    "beta0": [POSITIVE],
    "beta_scaling": [Options(BETA_SCALINGS)],
    "lr": [POSITIVE],
    "pixel_scale": [POSITIVE],
    "max_iter": [POSITIVE_INT],
    "decay": [FRACTION],
    "step_rule": [Options(STEP_RULES)],
    "objective": [Options(OBJECTIVES)],
    "num_old_obj": [POSITIVE_INT],
    "check_every": [POSITIVE_INT],
    "stop_tol": [POSITIVE],
    "obj_threshold": [None, POSITIVE],
    "layer": [LAYER],
    "batch_size": [POSITIVE_INT],
}
"""Constraints of :class:`CollisionSettings` (:mod:`poisonlab.validation`), one per field."""


@dataclass(frozen=True)
class CollisionSettings:
    """Optimisation settings of :func:`craft_poisons`, validated once (ConfigError names the field).

    Parameters
    ----------
    beta0 : float
        Base trade-off β0 > 0 before the dimension scaling (paper: 0.25 with ``pixel_scale``
        255; Yaseen et al. 2020 and the default here: 0.0083 with ``pixel_scale`` 2).
    beta_scaling : {"paper", "feature-dim", "none"}
        β = β0·(2048/D_in)² (paper and Yaseen et al. 2020), β0·(D_feat/D_in)² (IBM ART) or β0
        itself.
    lr : float
        Initial step size λ > 0 on the ``pixel_scale`` reference scale (paper/ART: 500·255 on
        [0, 255]; Yaseen et al. 2020 and the default: 3.825e7 on [-1, 1]).
    pixel_scale : float
        Width of the pixel range ``lr`` and ``beta0`` refer to (255, 2 or 1; default 2).
    max_iter : int
        Iterations per poison (paper's main script and Yaseen et al. 2020: 1000; ART: 120).
    decay : float
        Factor in (0, 1) applied to a poison's λ when its step is rejected (0.5 in both codes).
    step_rule : {"every-iteration", "mean-of-last"}
        Reject (and decay λ) when the candidate objective is not below the poison's current
        objective, checked every iteration (Yaseen et al. 2020), or not below the mean of its last
        ``num_old_obj`` candidate objectives, checked only every ``check_every`` iterations (the
        official code and ART; between checks every step is accepted). The default is
        every-iteration: the objective never increases, and on digits it collided about 8× closer
        (median distance ratio) than mean-of-last in 1000 iterations, where mean-of-last with a
        large λ bounces and is chaotic: rounding differences grow into different poisons
        (bench/results/feature_collision.md).
    objective : {"splitting", "official"}
        What the step control compares: S = ||Δf|| + (β/2)·||x − b||², the function the steps
        minimise (default), or the codes' O = ||Δf|| + β·||x − b|| (see the module docstring).
    num_old_obj, check_every : int
        M = 40 and the check period of the mean-of-last rule (the official ``iter % M/2 == 0``
        evaluates as ``iter % 40 == 0``: every 40 iterations).
    stop_tol : float
        A poison stops when ||x_new − x|| / ||x_new|| falls below this (official: 1e-10).
    obj_threshold : float or None
        A poison also stops once its objective is at most this (official: 2.9; Yaseen et al. 2020:
        1e-4).
    layer : str
        Name of the feature module (``dict(model.named_modules())``); "body" is poisonlab's
        penultimate layer.
    batch_size : int
        Poisons optimised together; larger sets are cut into independent chunks (memory only).
    """

    beta0: float = 0.0083
    beta_scaling: str = "paper"
    lr: float = 3.825e7
    pixel_scale: float = 2.0
    max_iter: int = 1000
    decay: float = 0.5
    step_rule: str = "every-iteration"
    objective: str = "splitting"
    num_old_obj: int = 40
    check_every: int = 40
    stop_tol: float = 1e-10
    obj_threshold: float | None = None
    layer: str = "body"
    batch_size: int = 512

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in validate_params(
            "feature-collision", SETTINGS_CONSTRAINTS, values
        ).items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict of the settings."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def scaled_beta(beta0: float, input_dim: int, feature_dim: int, scaling: str = "paper") -> float:
    """β from β0 and the dimensions: β0·(2048/D_in)² ("paper"), β0·(D_feat/D_in)² ("feature-dim",
    IBM ART's variant) or β0 unchanged ("none").

    β is on the same reference pixel scale as β0 (see the module docstring for units).
    """
    if scaling not in BETA_SCALINGS:
        raise ConfigError(f"beta_scaling {scaling!r} is not one of {', '.join(BETA_SCALINGS)}")
    if scaling == "none":
        return float(beta0)
    numerator = PAPER_FEATURE_DIM if scaling == "paper" else feature_dim
    return float(beta0) * (numerator / float(input_dim)) ** 2


def watermark(base: Tensor, target: Tensor, opacity: float) -> Tensor:
    """The paper's watermark γ·t + (1−γ)·b (opacity γ in [0, 1]); shapes broadcast, stays in [0,
    1]."""
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"watermark opacity must lie in [0, 1], got {opacity!r}")
    return opacity * target + (1.0 - opacity) * base


class _FeatureReady(Exception):
    """Raised by the hook to stop the forward pass once the feature layer has run."""


@contextmanager
def feature_extractor(model: nn.Module, layer: str) -> Iterator[Callable[[Tensor], Tensor]]:
    """Within the block, ``extract(x)`` returns the named layer's output for ``x``, flattened (N,
    D).

    The forward pass stops right after that layer (later layers are not computed). The model is
    put in eval mode inside the block; on exit the hook is removed and every module's train/eval
    flag restored, even on error.
    """
    module = resolve_layers(model, [layer])[layer]
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if not isinstance(output, Tensor):
            raise ConfigError(f"layer {layer!r} returns {type(output).__name__}, not a tensor")
        captured.append(output)
        raise _FeatureReady

    def extract(x: Tensor) -> Tensor:
        captured.clear()
        with suppress(_FeatureReady):
            model(x)
        if not captured:
            raise ConfigError(f"layer {layer!r} did not run in the model's forward pass")
        return captured.pop().flatten(1)

    with borrowed(model):
        handle = module.register_forward_hook(hook)
        try:
            yield extract
        finally:
            handle.remove()


@dataclass(frozen=True, eq=False)
class CraftResult:
    """Poisons and per-poison diagnostics from :func:`craft_poisons` (CPU tensors).

    Attributes
    ----------
    poisons : Tensor (P, C, H, W), in [0, 1]
    perturbation : Tensor (P,)
        ||p − b||₂ on the [0, 1] scale against the original (un-watermarked) base.
    distance_before, distance_after : Tensor (P,)
        ||f(b) − f(t)|| and ||f(p) − f(t)|| with raw (unweighted) features of the chosen layer.
    objective : Tensor (P,)
        Final objective (S or O, per the settings) of each poison's accepted iterate, before an
        additive watermark.
    iterations : Tensor (P,), int64
        Iterations each poison ran before it stopped (≤ max_iter).
    converged : Tensor (P,), bool
        True when a poison stopped on ``stop_tol`` or ``obj_threshold`` before max_iter.
    final_lr : Tensor (P,)
        Each poison's λ at the end, on the reference scale.
    beta, input_dim, feature_dim :
        The scaled β (reference scale) and the dimensions it came from.
    """

    poisons: Tensor
    perturbation: Tensor
    distance_before: Tensor
    distance_after: Tensor
    objective: Tensor
    iterations: Tensor
    converged: Tensor
    final_lr: Tensor
    beta: float
    input_dim: int
    feature_dim: int


def _distance_and_grad(
    extract: Callable[[Tensor], Tensor], x: Tensor, target_feats: Tensor, weights: Tensor | None
) -> tuple[Tensor, Tensor]:
    """(||w·(f(x) − f(t))|| per row, its gradient w.r.t. x); per-sample independence makes the
    gradient of the summed distances equal each row's own gradient."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        diff = extract(xr) - target_feats
        if weights is not None:
            diff = diff * weights
        distance = torch.linalg.vector_norm(diff, dim=1)
        (grad,) = torch.autograd.grad(distance.sum(), xr)
    return distance.detach(), grad


def _optimise_chunk(
    extract: Callable[[Tensor], Tensor],
    anchors: Tensor,
    target_feats: Tensor,
    weights: Tensor | None,
    settings: CollisionSettings,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Run forward-backward splitting on one chunk; returns (x, objective, iterations, converged,
    λ).

    λ, the objective history and the stopping state are per poison (one row each). Each
    iteration costs one forward and one backward pass over the still-active poisons: the gradient
    at a rejected candidate is never needed, and the gradient at the current point is cached.
    """
    n = len(anchors)
    device, dtype = anchors.device, anchors.dtype
    scale = settings.pixel_scale
    step_unit = settings.lr / scale**2  # λ on the [0, 1] scale; λβ is scale-free

    def objective(distance: Tensor, x: Tensor, rows: Tensor) -> Tensor:
        pixel = scale * torch.linalg.vector_norm((x - anchors[rows]).reshape(len(rows), -1), dim=1)
        if settings.objective == "splitting":
            return distance + 0.5 * beta * pixel.square()
        return distance + beta * pixel

    everyone = torch.arange(n, device=device)
    x = anchors.clone()
    distance, grad = _distance_and_grad(extract, x, target_feats, weights)
    obj = objective(distance, x, everyone)
    lam = torch.full((n,), step_unit, device=device, dtype=dtype)
    history = torch.full((n, settings.num_old_obj), float("nan"), device=device, dtype=dtype)
    history[:, 0] = obj
    iterations = torch.zeros(n, dtype=torch.long, device=device)
    active = torch.ones(n, dtype=torch.bool, device=device)
    converged = torch.zeros(n, dtype=torch.bool, device=device)
    for i in range(settings.max_iter):
        if settings.obj_threshold is not None:
            reached = active & (obj <= settings.obj_threshold)
            converged |= reached
            active &= ~reached
        rows = active.nonzero().flatten()
        if len(rows) == 0:
            break
        step = lam[rows].view(-1, *([1] * (x.ndim - 1)))
        weight = step * (beta * scale**2)  # λ_unit·β_unit = λβ on any scale
        forward = x[rows] - step * grad[rows]
        candidate = ((forward + weight * anchors[rows]) / (1.0 + weight)).clamp_(0.0, 1.0)
        iterations[rows] += 1
        change = torch.linalg.vector_norm((candidate - x[rows]).reshape(len(rows), -1), dim=1)
        size = torch.linalg.vector_norm(candidate.reshape(len(rows), -1), dim=1)
        still = change >= settings.stop_tol * size
        converged[rows[~still]] = True
        active[rows[~still]] = False
        rows, candidate = rows[still], candidate[still]
        if len(rows) == 0:
            continue
        cand_distance, cand_grad = _distance_and_grad(
            extract, candidate, target_feats[rows], weights
        )
        cand_obj = objective(cand_distance, candidate, rows)
        if settings.step_rule == "every-iteration":
            reject = cand_obj >= obj[rows]
        else:
            reference = history[rows].nanmean(dim=1)
            reject = (cand_obj >= reference) & (i % settings.check_every == 0)
            history[rows, (i + 1) % settings.num_old_obj] = cand_obj
        lam[rows[reject]] *= settings.decay
        keep = ~reject
        accepted = rows[keep]
        x[accepted] = candidate[keep]
        grad[accepted] = cand_grad[keep]
        obj[accepted] = cand_obj[keep]
    return x, obj, iterations, converged, lam * scale**2


def craft_poisons(
    model: nn.Module,
    targets: Tensor,
    bases: Tensor,
    target_of: Tensor,
    settings: CollisionSettings | None = None,
    *,
    opacity: float = 0.0,
    watermark_mode: str = "blend",
    feature_weights: Tensor | None = None,
) -> CraftResult:
    """Craft one poison per base, all at once, colliding with its target in the chosen layer.

    Parameters
    ----------
    model : nn.Module
        The victim's (pre-trained) network; computations run on its parameters' device and
        dtype. It is left exactly as it was: mode flags restored, no hooks, no parameter grads.
    targets : Tensor (T, C, H, W), values in [0, 1]
    bases : Tensor (P, C, H, W), values in [0, 1]
    target_of : Tensor (P,), int64
        Index into ``targets`` of each base's target (k bases per target → k poisons).
    settings : CollisionSettings
    opacity : float
        Watermark opacity γ in [0, 1). "blend" (the paper): the base becomes γ·t + (1−γ)·b before
        the optimisation and is the proximal anchor. "additive" (IBM ART): p ← clip(p + γ·t)
        after it.
    watermark_mode : {"blend", "additive"}
    feature_weights : Tensor (D_feat,) or None
        Per-dimension scale of feature differences inside the objective (Yaseen et al. 2020's
        min-max
        normalisation of features to [-1, 1] is 2/(max − min)); reported distances are raw.

    Returns
    -------
    CraftResult
        Poisons in ``bases``' dtype on the CPU, with per-poison diagnostics.
    """
    settings = settings or CollisionSettings()
    if watermark_mode not in WATERMARK_MODES:
        raise ConfigError(
            f"watermark_mode {watermark_mode!r} is not one of {', '.join(WATERMARK_MODES)}"
        )
    if not 0.0 <= opacity < 1.0:
        raise ConfigError(f"watermark opacity must lie in [0, 1), got {opacity!r}")
    if targets.ndim != 4 or bases.ndim != 4 or targets.shape[1:] != bases.shape[1:]:
        raise ConfigError("targets and bases must be (N, C, H, W) tensors of one image shape")
    if len(bases) == 0:
        raise ConfigError("craft_poisons needs at least one base image")
    target_of = torch.as_tensor(target_of, dtype=torch.long)
    if target_of.shape != (len(bases),) or (
        len(target_of) and (int(target_of.min()) < 0 or int(target_of.max()) >= len(targets))
    ):
        raise ConfigError(
            f"target_of must hold {len(bases)} indices into the {len(targets)} targets"
        )
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else bases.dtype
    t_all = targets.to(device, dtype)
    b_orig = bases.to(device, dtype)
    tgt = t_all[target_of.to(device)]
    anchors = watermark(b_orig, tgt, opacity) if watermark_mode == "blend" else b_orig.clone()
    input_dim = int(bases[0].numel())
    weights = feature_weights.to(device, dtype) if feature_weights is not None else None
    with torch.no_grad(), feature_extractor(model, settings.layer) as extract:
        target_feats = extract(t_all)[target_of.to(device)]
        feature_dim = int(target_feats.shape[1])
        beta = scaled_beta(settings.beta0, input_dim, feature_dim, settings.beta_scaling)
        parts = []
        for start in range(0, len(bases), settings.batch_size):
            chunk = slice(start, start + settings.batch_size)
            parts.append(
                _optimise_chunk(
                    extract, anchors[chunk], target_feats[chunk], weights, settings, beta
                )
            )
        x, obj, iterations, converged, lam = (torch.cat([p[k] for p in parts]) for k in range(5))
        if watermark_mode == "additive" and opacity > 0:
            x = (x + opacity * tgt).clamp_(0.0, 1.0)
        after = torch.linalg.vector_norm(extract(x) - target_feats, dim=1)
        before = torch.linalg.vector_norm(extract(b_orig) - target_feats, dim=1)
    perturbation = torch.linalg.vector_norm((x - b_orig).reshape(len(x), -1), dim=1)
    return CraftResult(
        poisons=x.to("cpu", bases.dtype),
        perturbation=perturbation.cpu(),
        distance_before=before.cpu(),
        distance_after=after.cpu(),
        objective=obj.cpu(),
        iterations=iterations.cpu(),
        converged=converged.cpu(),
        final_lr=lam.cpu(),
        beta=beta,
        input_dim=input_dim,
        feature_dim=feature_dim,
    )
