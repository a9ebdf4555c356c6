"""Read any layer's output by name with forward hooks that are always removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from poisonlab.errors import ConfigError
from poisonlab.models.borrow import borrowed


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    """Map layer names to modules; an unknown name raises ConfigError listing some valid ones."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        some = ", ".join(n for n in list(modules)[1:12] if n)
        raise ConfigError(f"unknown layer {missing[0]!r}; layers look like: {some}, ...")
    return {name: modules[name] for name in layers}


@contextmanager
def recording(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, list[Tensor]]]:
    """Within the block, every forward pass appends each named layer's output (detached) to a list.

    The hooks are removed when the block exits, even on error, so the model is left unchanged.
    """
    outputs: dict[str, list[Tensor]] = {name: [] for name in layers}
    handles = []
    try:
        for name, module in resolve_layers(model, layers).items():

            def hook(_module: nn.Module, _inputs: object, output: Tensor, name: str = name) -> None:
                outputs[name].append(output.detach())

            handles.append(module.register_forward_hook(hook))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def pool_activation(activation: Tensor) -> Tensor:
    """Global average pooling of conv maps (N, C, H, W) → (N, C); other shapes are flattened."""
    if activation.ndim == 4:
        return activation.mean(dim=(2, 3))
    return activation.flatten(1)


def capture_activations(
    model: nn.Module,
    images: Tensor,
    layers: Sequence[str],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    pool: bool = True,
) -> dict[str, Tensor]:
    """Outputs of the named layers for all ``images`` (in eval mode), as CPU tensors.

    With ``pool`` conv maps are globally average-pooled to one value per channel; otherwise every
    output is flattened to (N, D). Every module's train/eval mode is restored afterwards
    (:func:`~poisonlab.models.borrow.borrowed`).
    """
    requests = [(name, pool) for name in dict.fromkeys(layers)]
    outputs, _ = capture_representations(
        model, images, requests, batch_size=batch_size, device=device
    )
    return {name: outputs[(name, pool)] for name in layers}


#: Rows per forward pass of :func:`capture_representations` on the CPU, whatever ``batch_size``
#: says: a 64-image slice's activations stay in the caches (cnn-small at 28×28: 9 MB for its
#: widest layer, against 38 MB at 256 rows, which glibc also hands out as fresh mmap pages).
#: 60,000 Fashion-MNIST images through cnn-small in float32 on 2 threads: 20.3 s at 256 rows,
#: 14.5 s at 128, 12.6 s at 64, 14.1 s at 32; every row's outputs bit-identical
#: (bench/results/scan_scale.md).
CPU_ROWS = 64


@torch.no_grad()
def capture_representations(
    model: nn.Module,
    images: Tensor,
    requests: Sequence[tuple[str, bool]],
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> tuple[dict[tuple[str, bool], Tensor], Tensor]:
    """One forward pass over ``images`` (eval mode) recording several representations at once.

    The model is only read: its device, weights and every module's train/eval mode are as before.

    Parameters
    ----------
    requests : (layer name, pool) pairs
        Each layer's output average-pooled (``pool=True``, conv maps → one value per channel) or
        flattened; a layer may be requested both ways.
    batch_size, device : how the pass runs (CUDA when the model is there); on the CPU at most
        ``CPU_ROWS`` images go through the model at a time

    Returns
    -------
    ({(layer, pool): float32 CPU tensor (N, D)}, the model's outputs (N, K) on the CPU)
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    layers = list(dict.fromkeys(name for name, _ in requests))
    n = len(images)
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_ROWS)
    # Results go straight into (N, D) tensors allocated at the first batch: per-batch pieces
    # joined at the end kept thousands of small blocks alive between each batch's large
    # temporaries, and the heap then grew by several GB over 60,000 images (fragmentation).
    captured: dict[tuple[str, bool], Tensor] = {}
    logits = torch.empty(0)
    with borrowed(model), recording(model, layers) as outputs:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch_logits = model(images[start:stop].to(device))
            if start == 0:
                logits = torch.empty(n, *batch_logits.shape[1:], dtype=batch_logits.dtype)
            logits[start:stop] = batch_logits
            for name in layers:
                out = outputs[name].pop()
                outputs[name].clear()
                for key in requests:
                    if key[0] != name:
                        continue
                    value = pool_activation(out) if key[1] else out.flatten(1)
                    if start == 0:
                        captured[key] = torch.empty(n, value.shape[1], dtype=value.dtype)
                    captured[key][start:stop] = value
    for key in requests:
        captured.setdefault(key, torch.empty(0))
    return captured, logits
