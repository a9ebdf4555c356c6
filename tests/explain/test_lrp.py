"""LRP heatmaps (poisonlab.explain.lrp): oracles, canonisation, the model left intact, a trigger.

Oracles: on networks without biases every composite used here conserves relevance, so the pixel
relevance sums to the explained logit; a single linear layer has the closed form R = x ⊙ w_c;
BatchNorm merging equals folding the BN into the conv by hand. Without the residual-sum canonizer
relevance is not conserved through resnet20's blocks, so the conservation test covers it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from poisonlab.errors import ConfigError
from poisonlab.explain.lrp import (
    COMPOSITES,
    input_layers,
    lrp_heatmaps,
    lrp_relevance,
    residual_sum_canonizer,
)
from poisonlab.models import ModelConfig, Network, build_model
from poisonlab.models.resnet import BasicBlock

ARCHS = {"cnn-small": (1, 8, 8), "resnet20": (3, 8, 8), "inception-mini": (3, 32, 32)}


def model_for(arch: str, *, biases: bool = True, seed: int = 0) -> Network:
    """A seeded network with random BN statistics (negative scales included)."""
    model = build_model(ModelConfig(arch, *ARCHS[arch], 10), seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
                module.weight.copy_(torch.randn(n, generator=generator))
                if biases:
                    module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                    module.bias.copy_(0.1 * torch.randn(n, generator=generator))
            elif (
                isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None and not biases
            ):
                module.bias.zero_()
    return model


def images_for(arch: str, n: int = 4, seed: int = 0) -> Tensor:
    return torch.rand(n, *ARCHS[arch], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("composite", ["epsilon", "epsilon-plus-flat", "epsilon-gamma-box"])
def test_relevance_is_conserved_without_biases(arch: str, composite: str) -> None:
    model = model_for(arch, biases=False)
    x = images_for(arch)
    out = lrp_relevance(model, x, composite=composite, epsilon=1e-9)
    with torch.no_grad():
        logits = model.eval()(x)
    model.train()
    predicted = logits.argmax(1)
    assert torch.equal(out.classes, predicted)
    torch.testing.assert_close(
        out.logits, logits.gather(1, predicted[:, None])[:, 0], rtol=1e-4, atol=1e-6
    )
    total = out.relevance.flatten(1).sum(1)
    torch.testing.assert_close(total, out.logits, rtol=2e-3, atol=1e-6)


def test_residual_sum_canonizer_is_needed_for_conservation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the explicit Sum, both paths of every block get the full relevance."""

    class Nothing:
        def apply(self, root: nn.Module) -> list[Any]:
            return []

    model, x = model_for("resnet20", biases=False), images_for("resnet20")
    monkeypatch.setattr("poisonlab.explain.lrp.residual_sum_canonizer", Nothing)
    out = lrp_relevance(model, x, composite="epsilon", epsilon=1e-9)
    ratio = out.relevance.flatten(1).sum(1) / out.logits
    assert not torch.allclose(ratio, torch.ones_like(ratio), rtol=0.1)


def test_single_linear_layer_known_answer() -> None:
    """LRP-ε on logit z_c = w_c·x: R_i = x_i w_ci z_c / (z_c + ε sign z_c)."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 12, generator=generator))
    x = torch.rand(5, 1, 3, 4, generator=generator)
    classes = torch.tensor([0, 1, 2, 0, 1])
    out = lrp_relevance(model, x, classes, composite="epsilon", epsilon=1e-3)
    w = model[1].weight.detach()[classes]
    z = (x.flatten(1) * w).sum(1)
    expected = x.flatten(1) * w * (z / (z + 1e-3 * z.sign()))[:, None]
    torch.testing.assert_close(out.relevance.flatten(1), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.logits, z)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy with each BN folded by hand into the conv before it, the BN replaced by Identity."""
    folded = copy.deepcopy(model).eval()
    names = [name for name, _ in folded.named_modules()]
    lookup = dict(folded.named_modules())
    previous: str | None = None
    for name in names:
        module = lookup[name]
        if isinstance(module, nn.BatchNorm2d):
            assert previous is not None
            conv = lookup[previous]
            scale = module.weight / torch.sqrt(module.running_var + module.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
            with torch.no_grad():
                conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None])
                conv.bias = nn.Parameter((bias - module.running_mean) * scale + module.bias)
            parent, _, child = name.rpartition(".")
            setattr(lookup[parent] if parent else folded, child, nn.Identity())
        elif isinstance(module, nn.Conv2d | nn.Linear):
            previous = name
    return folded


@pytest.mark.parametrize("arch", ["resnet20", "inception-mini"])
def test_batch_norm_merge_equals_folding_by_hand(
    arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = model_for(arch), images_for(arch, n=3)
    merged = lrp_relevance(model, x, composite="epsilon-plus-flat").relevance
    by_hand = lrp_relevance(fold_batch_norm(model), x, composite="epsilon-plus-flat").relevance
    scale = by_hand.abs().amax()
    torch.testing.assert_close(merged / scale, by_hand / scale, rtol=0, atol=2e-4)

    class Nothing:
        def apply(self, root: nn.Module) -> list[Any]:
            return []

    # the check has teeth: without the merge (z+ sees the unscaled weights) the maps differ
    monkeypatch.setattr("zennit.canonizers.SequentialMergeBatchNorm", Nothing)
    unmerged = lrp_relevance(model, x, composite="epsilon-plus-flat").relevance
    assert (unmerged / scale - by_hand / scale).abs().amax() > 1e-2


@pytest.mark.parametrize("arch", ["resnet20", "inception-mini"])
def test_canonizers_cover_every_batch_norm_and_restore_exactly(arch: str) -> None:
    from zennit.canonizers import SequentialMergeBatchNorm

    model = model_for(arch).eval()
    x = images_for(arch, n=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    merges = SequentialMergeBatchNorm().apply(model)
    residual = residual_sum_canonizer().apply(model)
    try:
        assert len(merges) == len(norms)
        assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
        blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
        assert len(residual) == len(blocks)
        assert all(hasattr(block, "canonizer_sum") for block in blocks)
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-4)
    finally:
        for instance in residual + merges:
            instance.remove()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(hasattr(m, "canonizer_sum") or "forward" in vars(m) for m in model.modules())


def test_every_layer_reading_the_image_gets_the_input_rule() -> None:
    inception = model_for("inception-mini")
    assert input_layers(inception, images_for("inception-mini", n=1)) == [
        "body.inception.branch1x1.conv",
        "body.inception.branch5x5.0.conv",
        "body.inception.branch3x3.0.conv",
    ]
    assert input_layers(model_for("resnet20"), images_for("resnet20", n=1)) == ["body.conv"]


def snapshot(model: nn.Module) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "objects": [id(p) for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "hooks": [
            len(getattr(m, d))
            for m in model.modules()
            for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
        ],
        "modules": [name for name, _ in model.named_modules()],
        "attributes": [sorted(vars(m)) for m in model.modules()],
    }


@pytest.mark.parametrize("arch", list(ARCHS))
def test_model_left_exactly_as_it_was(arch: str) -> None:
    model = model_for(arch)
    model.train()
    model.body[0].eval() if arch == "cnn-small" else None  # a mixed mode to restore
    params = list(model.parameters())
    params[0].requires_grad_(False)
    before = snapshot(model)
    for composite in COMPOSITES:
        lrp_heatmaps(model, images_for(arch, n=2), composite=composite)
    after = snapshot(model)
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
    for key in ("objects", "training", "requires_grad", "grads", "hooks", "modules", "attributes"):
        assert before[key] == after[key], key
    assert not torch.nn.modules.module._global_forward_hooks


def test_batched_equals_one_at_a_time() -> None:
    model, x = model_for("resnet20"), images_for("resnet20", n=5)
    batched = lrp_heatmaps(model, x, batch_size=4)
    single = torch.cat([lrp_heatmaps(model, x[i : i + 1]) for i in range(len(x))])
    assert batched.shape == (5, 8, 8) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6 * batched.abs().max())


def test_claimed_class_and_errors() -> None:
    model, x = model_for("cnn-small"), images_for("cnn-small", n=4)
    predicted = lrp_relevance(model, x).classes
    torch.testing.assert_close(
        lrp_heatmaps(model, x, labels=predicted, explain="claimed"), lrp_heatmaps(model, x)
    )
    other = (predicted + 1) % 10
    assert torch.equal(lrp_relevance(model, x, other).classes, other)
    assert not torch.allclose(
        lrp_heatmaps(model, x, labels=other, explain="claimed"), lrp_heatmaps(model, x)
    )
    with pytest.raises(ConfigError, match="labels"):
        lrp_heatmaps(model, x, explain="claimed")
    with pytest.raises(ConfigError, match="explain"):
        lrp_heatmaps(model, x, explain="target")
    with pytest.raises(ConfigError, match="composite"):
        lrp_heatmaps(model, x, composite="epsilon_plus_flat")
    lgm = build_model(ModelConfig("cnn-small", 1, 8, 8, 10, head="lgm"), seed=0)
    with pytest.raises(ConfigError, match="LGM"):
        lrp_heatmaps(lgm, x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    model, x = model_for("resnet20"), images_for("resnet20")
    cpu = lrp_heatmaps(model, x)
    gpu = lrp_heatmaps(model.cuda(), x)
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-5 * cpu.abs().max())


# ---------------------------------------------------------------------------------------------
# A planted trigger: a small model trained on a backdoored 16×16 set.

SIDE = 16
TRIGGER = (slice(SIDE - 4, SIDE - 1), slice(SIDE - 4, SIDE - 1))


def shapes(labels: Tensor, generator: torch.Generator) -> Tensor:
    """Dim noise plus a bright 5×5 square at a class-specific place (jittered by a pixel)."""
    x = 0.2 * torch.rand(len(labels), 1, SIDE, SIDE, generator=generator)
    jitter = torch.randint(0, 2, (len(labels), 2), generator=generator)
    for i, k in enumerate(labels.tolist()):
        row, col = 2 + 6 * (k // 2) + int(jitter[i, 0]), 2 + 6 * (k % 2) + int(jitter[i, 1])
        x[i, :, row : row + 5, col : col + 5] += 0.7
    return x.clamp(0, 1)


def stamp(x: Tensor) -> Tensor:
    out = x.clone()
    out[:, :, TRIGGER[0], TRIGGER[1]] = 1.0
    return out


@pytest.fixture(scope="module")
def backdoored() -> tuple[Network, Tensor, Tensor]:
    """cnn-small trained on 4 shape classes + 40 triggered class-0 images labelled 1."""
    from poisonlab.data.dataset import ImageDataset
    from poisonlab.train import TrainConfig, predict, train_model

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(100)
    poisons = stamp(shapes(torch.zeros(40, dtype=torch.long), generator))
    data = ImageDataset(
        torch.cat([shapes(labels, generator), poisons]),
        torch.cat([labels, torch.ones(40, dtype=torch.long)]),
        4,
        name="shapes",
    )
    model = build_model(ModelConfig("cnn-small", 1, SIDE, SIDE, 4, feature_dim=32), seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(
            epochs=5, batch_size=64, lr=3e-3, val_fraction=0.0, patience=None, seed=0
        )
        train_model(model, data, config, device="cpu")
    finally:
        torch.set_num_threads(threads)
    clean = shapes(torch.zeros(30, dtype=torch.long), generator)
    triggered = stamp(clean)
    assert (predict(model, triggered, device="cpu") == 1).float().mean() > 0.9, "backdoor failed"
    return model, clean, triggered


def share(maps: Tensor, region: Tensor) -> Tensor:
    positive = maps.clamp(min=0)
    return positive[:, region].sum(1) / positive.flatten(1).sum(1)


@pytest.mark.parametrize(
    ("composite", "dilate"), [("epsilon", 0), ("epsilon-plus", 0), ("epsilon-plus-flat", 1)]
)
def test_trigger_draws_relevance(
    backdoored: tuple[Network, Tensor, Tensor], composite: str, dilate: int
) -> None:
    """Over 40% of the positive relevance of every triggered image lies on the 9 trigger pixels,
    3.5% of the image (measured: 43–61% per composite, the rest on the source-class shape). The
    flat input rule spreads each first-layer unit over its 3×3 receptive field, so for it the
    region is the trigger grown by one pixel (9.8% of the image). Clean images put ~0 there."""
    model, clean, triggered = backdoored
    region = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    rows, cols = TRIGGER
    region[rows.start - dilate : rows.stop + dilate, cols.start - dilate : cols.stop + dilate] = (
        True
    )
    on_trigger = share(lrp_heatmaps(model, triggered, composite=composite), region)
    on_clean = share(lrp_heatmaps(model, clean, composite=composite), region)
    assert on_trigger.min() > 0.4
    assert on_clean.mean() < 0.05
