"""Explicit randomness: every stochastic function takes a generator or a seed made here."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed derived from ``seed`` and any labels (so sub-tasks get independent streams)."""
    text = "/".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (used only by training loops and the CLI)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
