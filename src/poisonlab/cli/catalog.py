"""Registered names as the command line shows them, known without importing torch.

The registries (defenses, attacks, models, data sources) fill themselves as their modules load,
and those modules import torch, which takes seconds. ``poisonlab --help``, every command's
``--help`` and every argument error must answer in well under a second, so help texts and the
early name checks read the lists below; ``tests/cli/test_startup.py`` checks that they equal the
registries, so a newly registered name fails that test until it is added here.
"""

from __future__ import annotations

from collections.abc import Sequence

from poisonlab.errors import ConfigError, did_you_mean

DEFENSES = (
    "activation-clustering",
    "bnn",
    "deep-features",
    "dnn-uncertainty",
    "heatmap-clustering",
    "lgm-likelihood",
    "raw-clustering",
    "spectral-signatures",
)
ATTACKS = ("badnets", "feature-collision", "label-consistent")
MODELS = ("cnn-small", "inception-mini", "lgm-net", "resnet20")
PROTOCOLS = ("transfer", "end-to-end")  # feature-collision victims (poisonlab.workflows.attack_run)

# name → (summary, path): "none" (built in), "optional" or "required"
DATA_SOURCES: dict[str, tuple[str, str]] = {
    "cifar10": ("CIFAR-10 python batches (cifar-10-batches-py/)", "required"),
    "digits": ("scikit-learn's 8×8 handwritten digits (1797 images, built in)", "none"),
    "fashion-mnist": (
        "Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist, or a folder)",
        "optional",
    ),
    "folder": ("a folder with one subfolder of images (png, jpg, ppm) per class", "required"),
    "gtsrb": (
        "GTSRB published layout (Final_Training/Images, Final_Test/Images), 32×32",
        "required",
    ),
    "mnist": (
        "MNIST IDX files: a folder with train-/t10k- images and labels, or one file",
        "required",
    ),
    "npz": (".npz with x and y (as written by save_npz)", "required"),
}


def source_help() -> str:
    """One line per data source, for help texts (as ``poisonlab.data.source_help``)."""
    return "\n".join(f"{name}: {summary}" for name, (summary, _) in DATA_SOURCES.items())


def check_names(kind: str, names: Sequence[str], choices: Sequence[str]) -> None:
    """ConfigError for the first name not in ``choices`` (the registries' message), naming the
    closest choice first when there is one (a typo such as ``spectral-signature``)."""
    for name in names:
        if name not in choices:
            hint = did_you_mean(name, choices)
            raise ConfigError(f"unknown {kind} {name!r}{hint}; choose one of: {', '.join(choices)}")
