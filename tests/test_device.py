"""pick_device: the device a user names, or a clear error for one poisonlab cannot use."""

import pytest
import torch

from poisonlab.device import pick_device
from poisonlab.errors import ConfigError


def test_auto_and_cpu() -> None:
    assert pick_device(None).type in ("cpu", "cuda")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["mps", "xpu", "meta", "gpu", "cuda:x"])
def test_other_devices_are_refused_with_the_choices(name: str) -> None:
    with pytest.raises(ConfigError, match=r"expected auto, cpu, cuda or cuda:N"):
        pick_device(name)


def test_missing_cuda_device_is_named() -> None:
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=missing):
        pick_device(missing)
