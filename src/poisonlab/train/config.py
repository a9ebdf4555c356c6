"""TrainConfig: the knobs of the one training loop, validated once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from poisonlab.errors import ConfigError

OPTIMIZERS = ("adam", "sgd")


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
        Separate learning rate for the head's parameters (the LGM class means; seed 000 uses 1e-3
        with a backbone lr of 5e-4). None uses ``lr``.
    val_fraction : float
        Fraction of the training data held out (stratified) to measure validation loss; 0 disables.
    patience : int or None
        Stop when the validation loss has not improved for this many epochs, and restore the best
        weights. None trains for all epochs (still restoring the best weights when validating).
    seed : int
        Seeds the shuffling, the validation split and dropout, so a CPU run is repeatable.
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

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise ConfigError("learning rates must be > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {self.patience}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)
