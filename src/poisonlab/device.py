"""Choose the compute device: CUDA when present, else CPU, unless the user names one."""

from __future__ import annotations

import torch

from poisonlab.errors import ConfigError


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """Return ``preference`` as a device, or the best available one when it is None or "auto"."""
    if isinstance(preference, torch.device):
        return preference
    if preference is None or preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(
            f"unknown device {preference!r}: expected auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type not in ("cpu", "cuda"):
        # torch parses mps, xpu, meta, ... but poisonlab is built and tested on CPU and CUDA only
        raise ConfigError(f"unknown device {preference!r}: expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {preference!r} requested but no CUDA device is available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {preference!r} requested but only {torch.cuda.device_count()} CUDA "
            "device(s) are available (cuda:0 ...)"
        )
    return device
