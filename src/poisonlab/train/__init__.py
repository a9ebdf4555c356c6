"""Training and inference: one loop for softmax and LGM heads."""

from __future__ import annotations

from poisonlab.train.config import TrainConfig
from poisonlab.train.evaluate import Evaluation, evaluate, predict, predict_logits
from poisonlab.train.loop import EpochRecord, TrainResult, train_model
from poisonlab.train.recipes import default_recipe

__all__ = [
    "EpochRecord",
    "Evaluation",
    "TrainConfig",
    "TrainResult",
    "default_recipe",
    "evaluate",
    "predict",
    "predict_logits",
    "train_model",
]
