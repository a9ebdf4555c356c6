"""Every registered architecture adapts to input geometry and class count, and names its layers."""

from __future__ import annotations

import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.models import ModelConfig, build_model, capture_activations, model_names

SHAPES = {
    "cnn-small": [(1, 8, 8), (3, 28, 28)],
    "lgm-net": [(1, 8, 8), (1, 28, 28)],
    "resnet20": [(3, 32, 32), (1, 8, 8)],
    "inception-mini": [(3, 32, 32), (1, 28, 28)],
}


def test_registry_lists_the_four_architectures() -> None:
    assert model_names() == sorted(SHAPES)


@pytest.mark.parametrize("arch", sorted(SHAPES))
@pytest.mark.parametrize("head", ["softmax", "lgm"])
def test_shapes_features_and_probe_layers(arch: str, head: str) -> None:
    for c, h, w in SHAPES[arch]:
        model = build_model(ModelConfig(arch, c, h, w, 7, head=head), seed=0).eval()
        x = torch.rand(3, c, h, w, generator=torch.Generator().manual_seed(0))
        assert model(x).shape == (3, 7)
        assert model.features(x).shape == (3, model.feature_dim)
        acts = capture_activations(model, x, model.probe_layers)
        assert all(a.shape[0] == 3 and a.ndim == 2 for a in acts.values())


def test_seed_fixes_initial_weights_and_leaves_global_rng_alone() -> None:
    config = ModelConfig("cnn-small", 1, 8, 8, 10)
    state = torch.random.get_rng_state()
    a, b, c = build_model(config, seed=3), build_model(config, seed=3), build_model(config, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(p, q) and not torch.equal(p, r)


def test_parameter_counts_match_the_papers() -> None:
    inception = build_model(ModelConfig("inception-mini", 3, 32, 32, 43))
    resnet = build_model(ModelConfig("resnet20", 3, 32, 32, 10))
    # Schulth et al. 2022: ~1.11M
    assert 1.05e6 < sum(p.numel() for p in inception.parameters()) < 1.15e6
    assert 0.26e6 < sum(p.numel() for p in resnet.parameters()) < 0.28e6  # He et al.: 0.27M
    lgm = build_model(ModelConfig("lgm-net", 1, 28, 28, 10, head="lgm"))
    assert lgm.feature_dim == 2 and lgm.body.fc.in_features == 1152  # Yaseen et al. 2020 App. C


@pytest.mark.parametrize(("arch", "side"), [("cnn-small", 5), ("inception-mini", 16)])
def test_too_small_inputs_are_refused_clearly(arch: str, side: int) -> None:
    with pytest.raises(ConfigError, match=f"{side}×{side}"):
        build_model(ModelConfig(arch, 1, side, side, 10))


def test_bad_config_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match="head"):
        ModelConfig("cnn-small", 1, 8, 8, 10, head="svm")
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        build_model(ModelConfig("vgg", 1, 8, 8, 10))
