"""Shared fixtures: tiny synthetic datasets and models, seconds to build."""

from __future__ import annotations

import pytest
import torch

from poisonlab.data.dataset import ImageDataset


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: one thread is faster than two and immune to a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
