"""TrainConfig: the knobs of the one training loop, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Real
from typing import Any

from poisonlab.validation import (
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    ConstraintList,
    Interval,
    Options,
    validate_params,
)

OPTIMIZERS = ("adam", "sgd")
PRECISIONS = ("float32", "bfloat16")
TRAIN_CONSTRAINTS: dict[str, ConstraintList] = {
    "epochs": [POSITIVE_INT],
    "batch_size": [POSITIVE_INT],
    "optimizer": [Options(OPTIMIZERS)],
    "lr": [POSITIVE],
    "momentum": [NON_NEGATIVE],
    "weight_decay": [NON_NEGATIVE],
    "head_lr": [None, POSITIVE],
    "val_fraction": [Interval(Real, 0, 1, closed="left")],
    "patience": [None, POSITIVE_INT],
    "seed": [SEED],
    "precision": [Options(PRECISIONS)],
}
"""Every field's constraints (:mod:`poisonlab.validation`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters for :func:`poisonlab.train.train_model`.

    Parameters
    ----------
    epochs : int
        Maximum number of passes over the training data.
    batch_size : int
    optimizer : {"adam", "sgd"}
    lr : float
        Learning rate of the network body (and of a softmax head).
    momentum : float
        SGD momentum (ignored by Adam).
    weight_decay : float
    head_lr : float or None
        Separate learning rate for the head's parameters (the LGM class means; Yaseen et al. 2020
        uses 1e-3
        with a backbone lr of 5e-4). None uses ``lr``.
    val_fraction : float
        Fraction of the training data held out (stratified) to measure validation loss; 0 disables.
    patience : int or None
        Stop when the validation loss has not improved for this many epochs, and restore the best
        weights. None trains for all epochs (still restoring the best weights when validating).
    seed : int
        Seeds the shuffling, the validation split and dropout, so a CPU run is repeatable.
    precision : {"float32", "bfloat16"}
        "bfloat16" runs each training step's forward pass under ``torch.autocast`` in bfloat16
        (convolutions and matrix products in bfloat16; weights, gradients and the optimizer stay
        float32): 1.6× faster on CPUs with AMX/AVX-512-BF16 (2 epochs of cnn-small on 60,000
        Fashion-MNIST images: 40.8 s against 67.1 s; 34.6 s with the channels-last layout
        :func:`~poisonlab.train.train_model` then uses) and on recent GPUs, slower where bfloat16
        is emulated (:func:`poisonlab.train.recipes.fast_bfloat16`). Inference is float32 either
        way.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    head_lr: float | None = None
    val_fraction: float = 0.1
    patience: int | None = 5
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in validate_params("train", TRAIN_CONSTRAINTS, values).items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``precision`` only when it is not float32, so the records and
        cache keys written before that field existed still describe the same training."""
        values = asdict(self)
        if values["precision"] == "float32":
            del values["precision"]
        return values
