"""Shared fixtures: tiny synthetic datasets and models, seconds to build.

The test session runs under poisonlab's thread policy (poisonlab.runtime), applied here before
torch is first imported: OpenMP's passive wait policy, and one thread (POISONLAB_THREADS=1 unless
the developer set it), since tests use tiny tensors: one thread is faster than two and immune to
a busy machine. Commands run in-process and subprocesses inherit the setting.
"""

from __future__ import annotations

import os

from poisonlab import runtime

os.environ.setdefault(runtime.THREADS_ENV, "1")
runtime.use_threads()

import pytest  # noqa: E402
import torch  # noqa: E402

from poisonlab.data.dataset import ImageDataset  # noqa: E402


def blobs_dataset(n_per_class: int = 40, num_classes: int = 3, size: int = 8, seed: int = 0):
    """Images whose class is a bright square in a class-specific place, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for k in range(num_classes):
        base = torch.zeros(1, size, size)
        row, col = divmod(k, 2)
        base[:, row * 4 : row * 4 + 3, col * 4 : col * 4 + 3] = 0.9
        noise = 0.1 * torch.rand(n_per_class, 1, size, size, generator=generator)
        images.append((base + noise).clamp(0, 1))
        labels.append(torch.full((n_per_class,), k, dtype=torch.long))
    return ImageDataset(torch.cat(images), torch.cat(labels), num_classes, name="blobs")


@pytest.fixture
def blobs() -> ImageDataset:
    """120 easy 8×8 images in 3 classes."""
    return blobs_dataset()
