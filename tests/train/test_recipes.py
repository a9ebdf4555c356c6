"""Default recipes, and the scan's shorter one for large data sets."""

from __future__ import annotations

import pytest

from poisonlab.errors import ConfigError
from poisonlab.train.recipes import LARGE, SCAN_LARGE_EPOCHS, default_recipe, scan_recipe


def test_large_data_sets_get_fewer_epochs_and_bigger_batches():
    small, large = default_recipe("cnn-small", 1000), default_recipe("cnn-small", LARGE)
    assert (small.epochs, small.batch_size, small.patience) == (20, 64, 5)
    assert (large.epochs, large.batch_size, large.patience) == (8, 128, 3)


def test_scan_recipe_shortens_only_large_data_and_yields_to_overrides():
    assert scan_recipe("lgm-net", 1828, seed=3) == default_recipe("lgm-net", 1828, seed=3)
    recipe = scan_recipe("cnn-small", 60_000)
    assert recipe.epochs == SCAN_LARGE_EPOCHS and recipe.patience is None
    assert recipe.batch_size == default_recipe("cnn-small", 60_000).batch_size
    assert scan_recipe("cnn-small", 60_000, epochs=8) == default_recipe(
        "cnn-small", 60_000, epochs=8
    )
    assert scan_recipe("cnn-small", 60_000, epochs=None).epochs == SCAN_LARGE_EPOCHS


def test_scan_recipe_trains_large_sets_in_bfloat16_only_when_asked():
    assert scan_recipe("cnn-small", 60_000).precision == "float32"
    assert scan_recipe("cnn-small", 60_000, bfloat16=True).precision == "bfloat16"
    assert scan_recipe("cnn-small", 1828, bfloat16=True).precision == "float32"
    assert scan_recipe("cnn-small", 60_000, bfloat16=True, epochs=8).precision == "float32"


def test_float32_recipes_keep_their_former_record():
    """Cache keys and records from before the precision field describe float32 training."""
    from poisonlab.train.config import TrainConfig

    recipe = default_recipe("cnn-small", 500)
    assert "precision" not in recipe.to_dict()
    mixed = scan_recipe("cnn-small", 60_000, bfloat16=True)
    assert mixed.to_dict()["precision"] == "bfloat16"
    assert TrainConfig(**mixed.to_dict()) == mixed and TrainConfig(**recipe.to_dict()) == recipe


def test_a_typo_in_the_architecture_or_a_keyword_is_refused_by_name() -> None:
    """Issue: default_recipe("cnn_small", n) returned the generic recipe without a word, a
    misspelt override raised dataclasses' TypeError, and a string count a raw '>=' TypeError."""
    with pytest.raises(ConfigError, match="unknown model 'cnn_small'; choose one of: cnn-small"):
        default_recipe("cnn_small", 100)
    with pytest.raises(ConfigError, match="default_recipe does not take 'epoch'; it takes: "):
        default_recipe("cnn-small", 100, epoch=3)
    with pytest.raises(ConfigError, match="default_recipe n_samples must be an integer >= 0"):
        default_recipe("cnn-small", "100")
