"""Layer-wise Relevance Propagation heatmaps in batches, with zennit, leaving the model untouched.

LRP (Bach et al. 2015, PLoS ONE 10(7): e0130140; Montavon et al. 2019, "Layer-Wise Relevance
Propagation: An Overview") explains one logit g_c(x): relevance starts as R = g_c(x) on that logit
(all others 0) and is redistributed layer by layer back to the pixels by per-layer rules that
(approximately) conserve its sum. Heatmap Clustering (Schulth et al. 2022 §5.4, docs/methods.md#lrp)
sums the pixel
relevance over colour channels into an (H, W) map per image.

What this module adds to zennit (Anders et al., "Software for dataset-wide XAI: from local
explanations to global insights with Zennit, CoRelAy, and ViRelAy", arXiv:2106.13200):

- **Composites by name** (:data:`COMPOSITES`): ``epsilon-plus-flat`` (default; Kohlbrenner et
  al. 2020's recommendation: flat on the input layer, z+ on convolutions, ε on dense layers),
  ``epsilon-gamma-box`` (zB on the input layer with the [0, 1] pixel box, γ on convolutions),
  ``epsilon-plus``, ``epsilon-alpha2-beta1``, ``epsilon-alpha2-beta1-flat`` (zennit's registry),
  and ``epsilon``: LRP-ε on every linear layer, the uniform "e-rule" Schulth et al. 2022 used.
- **Every input layer gets the input rule.** zennit's "first layer" is the first linear module in
  module order; inception-mini has four layers reading the image (its Inception branches), so the
  flat / zB rule would reach only one of them. We find all layers whose input *is* the image (one
  probe forward pass) and map them by name.
- **Canonisation.** BatchNorm is merged into the preceding conv (zennit's
  ``SequentialMergeBatchNorm``, which pairs a BN with the linear module right before it in module
  order: resnet20's conv1→bn1, conv2→bn2, shortcut.conv→shortcut.bn and stem, inception-mini's
  conv/bn/relu blocks and conv{1,2,3}→bn{1,2,3} are all covered, tested). resnet20's residual
  ``out + shortcut(x)`` is a functional add that autograd would pass the *full* relevance through
  on both paths (doubling it per block), so :class:`residual_sum_canonizer` routes it through a
  ``zennit.layer.Sum`` module, which the composites give the z-rule (``Norm``): relevance is split
  in proportion to each path's contribution, as zennit's own torchvision ResNet canonizer does.
- **The model is left exactly as it was**: zennit's canonizers swap parameter data and restore the
  original tensors; we also set eval mode and ``requires_grad=False`` for the duration and restore
  every module's mode and every parameter's flag, and no gradient is written to ``.grad``.

Relevance is explained for the predicted class (max logit, Schulth et al. 2022) or a given class per
image
(e.g. the claimed training label), starting from the logit's value: LRP's definition. For
max-normalised point clouds the scale is irrelevant, but the sign is not: an image whose explained
logit is negative gets the heatmap of the evidence *against* that class.

Limits: the model must use module activations and must not reuse a module in one forward pass
(zennit's hooks are per module); in-place activations are fine (zennit clones around them).
LGM heads are not linear in the features (their logits are negative squared Mahalanobis
distances), so no LRP rule applies to them; we refuse them with a ConfigError rather than
explaining something else under the same name. Inputs are taken to lie in the [0, 1] pixel box
(poisonlab models see raw pixels, no normalisation layer).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from poisonlab import progress
from poisonlab.errors import ConfigError
from poisonlab.models.borrow import borrowed
from poisonlab.models.heads import LGMHead
from poisonlab.models.resnet import BasicBlock

__all__ = [
    "COMPOSITES",
    "EXPLAIN",
    "Relevance",
    "input_layers",
    "lrp_heatmaps",
    "lrp_relevance",
    "preserved",
    "residual_sum_canonizer",
]

#: Composite names → (zennit registry name or None for ours, rule for the input layers).
COMPOSITES: dict[str, tuple[str | None, str | None]] = {
    "epsilon-plus-flat": ("epsilon_plus_flat", "flat"),
    "epsilon-gamma-box": ("epsilon_gamma_box", "zbox"),
    "epsilon-plus": ("epsilon_plus", None),
    "epsilon-alpha2-beta1": ("epsilon_alpha2_beta1", None),
    "epsilon-alpha2-beta1-flat": ("epsilon_alpha2_beta1_flat", "flat"),
    "epsilon": (None, None),
}

#: Which logit is explained: the model's prediction, or the class given per image.
EXPLAIN = ("predicted", "claimed")

#: The pixel box of poisonlab inputs (zB rule bounds).
PIXEL_LOW, PIXEL_HIGH = 0.0, 1.0


@dataclass(frozen=True, eq=False)
class Relevance:
    """LRP output for a batch of images.

    relevance : float32 (N, C, H, W), CPU: pixel relevance
    logits : float32 (N,), CPU: the explained logit g_c(x) (the relevance put on the output)
    classes : int64 (N,), CPU: the explained class c of each image
    """

    relevance: Tensor
    logits: Tensor
    classes: Tensor


def check_composite(name: str) -> None:
    """ConfigError unless ``name`` is one of :data:`COMPOSITES`."""
    if name not in COMPOSITES:
        raise ConfigError(f"composite must be one of {', '.join(COMPOSITES)}, got {name!r}")


def _check_model(model: nn.Module) -> None:
    if isinstance(getattr(model, "head", None), LGMHead):
        raise ConfigError(
            "LRP needs a linear classification head; this model has an LGM head (its logits are "
            "squared Mahalanobis distances, not a linear layer): train a softmax model for "
            "heatmap-clustering"
        )


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters for the duration; every mode and flag restored after.

    Eval mode makes Dropout the identity and BatchNorm use (and keep) its running statistics;
    frozen parameters keep the backward pass to the input only, so no ``.grad`` is written.
    """
    with borrowed(model, freeze=True):
        yield model


def input_layers(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the linear (conv or dense) modules whose input is the model's input itself.

    One forward pass of ``example`` (N ≥ 1 images) with temporary pre-hooks, removed afterwards.
    """
    from zennit.types import Linear

    x = example.detach().clone()
    found: list[str] = []
    handles = []

    def watch(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if inputs and inputs[0] is x and name not in found:
                found.append(name)

        return hook

    try:
        for name, module in model.named_modules():
            if isinstance(module, Linear):
                handles.append(module.register_forward_pre_hook(watch(name)))
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _residual_forward(block: BasicBlock, x: Tensor) -> Tensor:
    """:meth:`BasicBlock.forward` with the residual sum through the ``canonizer_sum`` module."""
    out = block.relu1(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    summed = cast(nn.Module, block.canonizer_sum)(torch.stack([block.shortcut(x), out], dim=-1))
    return block.relu2(summed)  # type: ignore[no-any-return]


def residual_sum_canonizer() -> Any:
    """A zennit ``AttributeCanonizer`` giving every resnet20 :class:`BasicBlock` an explicit Sum.

    While applied, each block gets a ``canonizer_sum`` module (``zennit.layer.Sum``) and a forward
    that sums ``shortcut(x)`` and the conv path through it, so LRP's z-rule splits relevance
    between them; removing the canonizer deletes both attributes again.
    """
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
        if not isinstance(module, BasicBlock):
            return None
        return {"forward": _residual_forward.__get__(module), "canonizer_sum": Sum()}

    return AttributeCanonizer(attributes)


def _composite(
    name: str, first: Sequence[str], *, epsilon: float, gamma: float, stabilizer: float
) -> Any:
    """The named composite with BN merging, residual sums, and the input rule on ``first``."""
    from zennit import composites, rules
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.types import Linear

    registry_name, input_rule = COMPOSITES[name]
    if registry_name is None:  # uniform LRP-ε (Schulth et al. 2022's "e-rule")
        layer_map = [*composites.layer_map_base(stabilizer), (Linear, rules.Epsilon(epsilon))]
        base = composites.LayerMapComposite(layer_map=layer_map)
    else:
        kwargs: dict[str, Any] = {"epsilon": epsilon, "stabilizer": stabilizer}
        if registry_name == "epsilon_gamma_box":
            kwargs.update(low=PIXEL_LOW, high=PIXEL_HIGH, gamma=gamma)
        base = composites.COMPOSITES[registry_name](**kwargs)
    parts = [base]
    if input_rule is not None and first:
        rule = (
            rules.Flat(stabilizer=stabilizer)
            if input_rule == "flat"
            else rules.ZBox(low=PIXEL_LOW, high=PIXEL_HIGH, stabilizer=stabilizer)
        )
        parts.insert(0, composites.NameMapComposite(name_map=[(tuple(first), rule)]))
    canonizers = [SequentialMergeBatchNorm(), residual_sum_canonizer()]
    return composites.MixedComposite(parts, canonizers=canonizers)


def _output_relevance(classes: Tensor | None, chosen: dict[str, Tensor]) -> Any:
    """zennit's ``attr_output``: the explained logit on its class, 0 elsewhere (LRP's start).

    The class is ``classes`` or, when None, the argmax of the logits of this very forward pass;
    the classes and logits are recorded in ``chosen``.
    """

    def start(output: Tensor) -> Tensor:
        out = output.detach()
        c = out.argmax(dim=1) if classes is None else classes.to(out.device)
        chosen["classes"], chosen["logits"] = c, out.gather(1, c[:, None])[:, 0]
        return torch.zeros_like(out).scatter_(1, c[:, None], 1.0) * out

    return start


def _attribute(
    model: nn.Module,
    images: Tensor,
    classes: Tensor | None,
    *,
    composite: str,
    epsilon: float,
    gamma: float,
    stabilizer: float,
    batch_size: int,
    description: str,
) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
    """Yield (rows, relevance on the model's device, explained logits, classes) per batch."""
    check_composite(composite)
    _check_model(model)
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N > 0, got {tuple(images.shape)}"
        )
    if classes is not None and classes.shape != (len(images),):
        raise ValueError(f"classes must have shape ({len(images)},), got {tuple(classes.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from zennit.attribution import Gradient

    param = next(model.parameters(), None)
    device = param.device if param is not None else images.device
    dtype = param.dtype if param is not None else images.dtype
    with preserved(model), torch.enable_grad():
        first = input_layers(model, images[:1].to(device, dtype))
        comp = _composite(composite, first, epsilon=epsilon, gamma=gamma, stabilizer=stabilizer)
        with (
            Gradient(model=model, composite=comp) as attributor,
            progress.bar(description, total=len(images)) as bar,
        ):
            for start in range(0, len(images), batch_size):
                rows = slice(start, start + batch_size)
                x = images[rows].to(device, dtype, copy=True).requires_grad_(True)
                chosen: dict[str, Tensor] = {}
                given = None if classes is None else classes[rows]
                _, relevance = attributor(x, _output_relevance(given, chosen))
                yield rows, relevance.detach(), chosen["logits"], chosen["classes"]
                bar.advance(x.shape[0])


def lrp_relevance(
    model: nn.Module,
    images: Tensor,
    classes: Tensor | None = None,
    *,
    composite: str = "epsilon-plus-flat",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
    batch_size: int = 128,
) -> Relevance:
    """Pixel relevance of each image for its predicted class or for ``classes``.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits (N, K); left exactly as it was (see :func:`preserved`).
    images : Tensor of shape (N, C, H, W)
        Pixels in [0, 1]; moved batch by batch to the model's device.
    classes : Tensor of shape (N,), int64, optional
        Class to explain per image; None explains the predicted (max-logit) class.
    composite : str
        One of :data:`COMPOSITES`.
    epsilon : float
        ε of the LRP-ε rule (dense layers; every layer for ``"epsilon"``), in logit units.
    gamma : float
        γ of the LRP-γ rule (``epsilon-gamma-box`` only).
    stabilizer : float
        Denominator stabiliser of the other rules (zennit's default 1e-6).
    batch_size : int
        Images per backward pass.

    Returns
    -------
    Relevance
        Relevance (N, C, H, W), explained logits (N,) and classes (N,), on the CPU.

    Raises
    ------
    ConfigError
        For an unknown composite or an LGM head.
    """
    parts = list(
        _attribute(
            model,
            images,
            classes,
            composite=composite,
            epsilon=epsilon,
            gamma=gamma,
            stabilizer=stabilizer,
            batch_size=batch_size,
            description="LRP relevance",
        )
    )
    return Relevance(
        torch.cat([r.float().cpu() for _, r, _, _ in parts]),
        torch.cat([g.float().cpu() for _, _, g, _ in parts]),
        torch.cat([c.cpu() for _, _, _, c in parts]),
    )


def lrp_heatmaps(
    model: nn.Module,
    images: Tensor,
    *,
    labels: Tensor | None = None,
    explain: str = "predicted",
    composite: str = "epsilon-plus-flat",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    stabilizer: float = 1e-6,
    batch_size: int = 128,
) -> Tensor:
    """LRP heatmaps (relevance summed over colour channels), Schulth et al. 2022 §5.4.

    Parameters
    ----------
    model : nn.Module
        A classifier returning logits; left exactly as it was.
    images : Tensor of shape (N, C, H, W)
        Pixels in [0, 1].
    labels : Tensor of shape (N,), int64, optional
        Claimed labels; required when ``explain="claimed"``.
    explain : {"predicted", "claimed"}
        Explain the max-logit class (Schulth et al. 2022) or the claimed label.
    composite, epsilon, gamma, stabilizer, batch_size
        See :func:`lrp_relevance`.

    Returns
    -------
    Tensor of shape (N, H, W)
        float32 heatmaps on the CPU.

    Raises
    ------
    ConfigError
        For an unknown ``explain`` or composite, missing labels, or an LGM head.
    """
    if explain not in EXPLAIN:
        raise ConfigError(f"explain must be one of {', '.join(EXPLAIN)}, got {explain!r}")
    if explain == "claimed" and labels is None:
        raise ConfigError('explain="claimed" needs the claimed labels')
    classes = labels if explain == "claimed" else None
    maps = torch.empty(len(images), *images.shape[2:], dtype=torch.float32)
    for rows, relevance, _, _ in _attribute(
        model,
        images,
        classes,
        composite=composite,
        epsilon=epsilon,
        gamma=gamma,
        stabilizer=stabilizer,
        batch_size=batch_size,
        description="LRP heatmaps",
    ):
        maps[rows] = relevance.sum(dim=1).float().cpu()
    return maps
