"""Default training recipes per architecture and head, so `poisonlab train` works without flags.

Measured on this project's 2-core CPU (see bench/bench_training.py): the recipes below reach the
accuracies in README.md; every field can be overridden on the command line or in a config.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from poisonlab.train.config import TrainConfig
from poisonlab.validation import NON_NEGATIVE_INT, check_keywords, check_param

if TYPE_CHECKING:
    import torch

LARGE = 20_000  # images from which a data set counts as large (fewer epochs, bigger batches)

_BASE = {
    "cnn-small": TrainConfig(epochs=20, batch_size=64, lr=1e-3, patience=5),
    # Yaseen et al. (docs/methods.md, LGM loss) train the LGM means with their own (larger) learning rate
    "lgm-net": TrainConfig(epochs=40, batch_size=64, lr=1e-3, head_lr=1e-2, patience=8),
    "resnet20": TrainConfig(epochs=30, batch_size=128, lr=1e-3, patience=6),
    "inception-mini": TrainConfig(epochs=30, batch_size=64, lr=1e-3, patience=6),
}


# A scan's model on a large data set trains 2 epochs instead of 8: a quarter of the time; after
# 2 epochs activation clustering and deep features separate the poisons as well as after 8,
# spectral signatures less well, and the model is a few points less accurate on clean test data
# (60,000 Fashion-MNIST images with 10% BadNets: bench/results/training_scan_recipe*.md).
SCAN_LARGE_EPOCHS = 2

# A large scan's confirming retraining (exclusionary reclassification) trains 1 epoch: its model
# only has to say where a suspect group's samples belong, and after one pass over 20,000 or more
# images it says it as after two (60,000 Fashion-MNIST images with 10% BadNets: the same l/q
# verdicts, bench/results/machine_s11.md), in half the time of the scan's longest stage.
SCAN_LARGE_RETRAIN_EPOCHS = 1

# ... on at most LARGE of the kept images (a seeded random subset): every member that names a
# class retrains once (Activation Clustering, raw clustering and Spectral Signatures each), and
# on 60,000 Fashion-MNIST images two full-epoch retrainings took about 42 of a scan's 122 s
# (bench/results/verdicts.md, "Spectral Signatures confirms").
SCAN_LARGE_RETRAIN_IMAGES = LARGE


def _short_retraining(n_samples: int, epochs: int | None) -> bool:
    """Whether a scan's confirming retraining is shortened: from ``LARGE`` images, unless the
    scan was given ``epochs``."""
    return n_samples >= LARGE and epochs is None


def scan_retrain_epochs(n_samples: int, epochs: int | None = None) -> int | None:
    """Epochs of a scan's confirming retraining on ``n_samples`` images: ``SCAN_LARGE_RETRAIN_EPOCHS``
    when it is shortened, else None (the model's recipe)."""
    return SCAN_LARGE_RETRAIN_EPOCHS if _short_retraining(n_samples, epochs) else None


def scan_retrain_images(n_samples: int, epochs: int | None = None) -> int | None:
    """How many images at most train a scan's confirming retraining on ``n_samples`` images:
    ``SCAN_LARGE_RETRAIN_IMAGES`` when it is shortened, else None (all the kept images)."""
    return SCAN_LARGE_RETRAIN_IMAGES if _short_retraining(n_samples, epochs) else None


def scan_recipe(
    arch: str, n_samples: int, *, bfloat16: bool = False, **overrides: Any
) -> TrainConfig:
    """The recipe ``poisonlab scan`` trains its own model with: :func:`default_recipe`, except
    that large data sets (≥ 20,000 images) get ``SCAN_LARGE_EPOCHS`` epochs without early
    stopping, in bfloat16 mixed precision when ``bfloat16`` (the caller's device computes it
    natively, :func:`fast_bfloat16`). That model exists to expose poisons to the defenses, not to
    be deployed, and its training is most of a large scan's time (measurements above and
    bench/results/scan_scale.md). ``overrides`` win: a scan with ``--epochs 8`` trains the
    default recipe's 8 epochs (in float32 unless the scan's ``--precision`` says otherwise).
    """
    recipe = default_recipe(arch, n_samples, **overrides)
    if n_samples < LARGE or overrides.get("epochs") is not None:
        return recipe
    patience = overrides.get("patience")  # early stopping has no room in 2 epochs
    precision = "bfloat16" if bfloat16 else recipe.precision
    return replace(recipe, epochs=SCAN_LARGE_EPOCHS, patience=patience, precision=precision)


def fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions and matrix products natively: a CPU with
    AMX tiles or AVX-512-BF16 (oneDNN's bfloat16 kernels; elsewhere they are emulated and slower
    than float32), or a CUDA device with bfloat16 support."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type != "cpu":
        return False
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def default_recipe(arch: str, n_samples: int, **overrides: Any) -> TrainConfig:
    """A sensible TrainConfig for ``arch`` on ``n_samples`` images, with ``overrides`` applied.

    Large data sets (≥ 20,000 images) need fewer passes: epochs are capped at 8 there.
    """
    from poisonlab.models import MODELS, model_names

    if arch not in model_names():  # a typo ("cnn_small") would get the generic recipe silently
        MODELS.get(arch)  # ConfigError listing the architectures
    check_param("default_recipe", "n_samples", n_samples, [NON_NEGATIVE_INT])
    check_keywords("default_recipe", TrainConfig, overrides)
    recipe = _BASE.get(arch, TrainConfig())
    if n_samples >= LARGE:
        recipe = replace(recipe, epochs=min(recipe.epochs, 8), batch_size=128, patience=3)
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(recipe, **given)
