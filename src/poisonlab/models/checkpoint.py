"""Checkpoints: weights as safetensors plus a JSON of the model config; loading verifies both."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from poisonlab.errors import CheckpointError, PoisonlabError
from poisonlab.models.config import ModelConfig
from poisonlab.models.network import Network
from poisonlab.models.registry import build_model
from poisonlab.validation import short_repr

FORMAT = "poisonlab-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded network with the metadata saved beside it (training data, metrics...)."""

    model: Network
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def save_checkpoint(model: Network, directory: str | Path, **extra: Any) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/model.json``; returns the directory.

    ``extra`` (JSON-serialisable) is stored under "extra", e.g. the data set and test accuracy.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    meta = {"format": FORMAT, "version": VERSION, "model": model.config.to_dict(), "extra": extra}
    (directory / META).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return directory


def _resolve(path: str | Path) -> tuple[Path, Path]:
    if not isinstance(path, str | Path):
        raise CheckpointError(
            f"checkpoint must be a folder path (str or Path), got {type(path).__name__} {short_repr(path)}"
        )
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_file() and path.name not in (WEIGHTS, META):  # not the folder's parent's problem
        raise CheckpointError(
            f"checkpoint {path} is a file; expected the folder holding {WEIGHTS} and {META} "
            "(as poisonlab train writes)"
        )
    weights, meta = directory / WEIGHTS, directory / META
    for needed in (weights, meta):
        if not needed.is_file():
            raise CheckpointError(f"checkpoint {directory}: missing {needed.name}")
    return weights, meta


def load_checkpoint(
    path: str | Path,
    *,
    expect: ModelConfig | dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> Checkpoint:
    """Load a checkpoint folder (or a file inside it) saved by :func:`save_checkpoint`.

    The weights must match the architecture in model.json tensor for tensor; with ``expect``, the
    stored config must also agree on every field given there (e.g. ``{"in_channels": 1,
    "num_classes": 10}`` from the data the model will see). Any mismatch raises CheckpointError.
    """
    weights, meta_path = _resolve(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a poisonlab checkpoint (format != {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path}: unsupported checkpoint version {meta.get('version')}")
    try:
        config = ModelConfig.from_dict(meta.get("model"))  # type: ignore[arg-type]
    except (PoisonlabError, TypeError) as exc:
        raise CheckpointError(f"{meta_path}: bad model config: {exc}") from None
    if expect is not None:
        wanted = expect.to_dict() if isinstance(expect, ModelConfig) else dict(expect)
        stored = config.to_dict()
        diffs = [
            f"{k}: checkpoint has {stored.get(k)!r}, expected {v!r}"
            for k, v in wanted.items()
            if stored.get(k) != v
        ]
        if diffs:
            raise CheckpointError(
                f"checkpoint {meta_path.parent} does not fit: " + "; ".join(diffs)
            )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({exc})") from None
    model = build_model(config)
    _check_state(model, state, weights)
    model.load_state_dict(state)
    return Checkpoint(model.to(device).eval(), meta.get("extra") or {}, meta_path.parent)


def _check_state(model: Network, state: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse weights whose names or shapes differ from the architecture, listing a few."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing {k}" for k in expected if k not in found]
    problems += [f"unexpected {k}" for k in found if k not in expected]
    problems += [
        f"{k} has shape {found[k]}, architecture needs {shape}"
        for k, shape in expected.items()
        if k in found and found[k] != shape
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{where}: weights do not match architecture {model.config.arch!r}: "
            + "; ".join(problems[:3])
            + more
        )
