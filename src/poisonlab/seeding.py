"""Explicit randomness: every stochastic function takes a generator or a seed made here."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG (CPU and every CUDA device) inside the block; restore it after.

    For code that draws from the global generator and cannot take a ``torch.Generator`` (dropout,
    bayesian-torch's Flipout layers): results repeat for a seed, and the caller's random state is
    left exactly as it was.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (used only by training loops and the CLI)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
