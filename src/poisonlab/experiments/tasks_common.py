"""Shared pieces of the experiment tasks: data splits, cached model training, detectors, artifacts.

Every task reads the same ``[data]``, ``[model]`` and ``[train]`` sections:

- ``[data]``: ``source`` (a data spec: ``digits``, ``fashion-mnist``, ``mnist:PATH``,
  ``cifar10:PATH``, ``gtsrb:PATH``...), optional ``limit`` (a stratified subset of about that many
  training images, with proportionally smaller held-out and test parts), ``holdout`` and ``test``
  fractions for single-part sources, ``seed`` (the split seed, default 0, so repeats of a cell
  keep their data and vary only what the task seeds), and optional ``image_size`` (an image folder
  or GTSRB resized to it, as by the commands' ``--image-size``: ``[[HEIGHT, WIDTH]]``, as a list
  value is written, ``"HEIGHTxWIDTH"`` or one integer for a square). See
  :func:`poisonlab.data.prepare_splits`.
- ``[model]``: ``arch`` plus :class:`~poisonlab.models.ModelConfig` fields; the geometry comes
  from the data.
- ``[train]``: :class:`~poisonlab.train.TrainConfig` fields applied over the architecture's
  default recipe (:func:`~poisonlab.train.recipes.default_recipe`); ``seed`` defaults to the cell's.

Models are trained through ``context.cache`` under a key made of everything that determines the
weights — the data spec, what the model was trained on (clean data, or the attack's resolved
parameters and seed), the model config, the resolved recipe and the poisonlab version — so two
cells that need the same model share one training, also across configs and runs.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import poisonlab
from poisonlab.data.dataset import ImageDataset
from poisonlab.data.splits import Split
from poisonlab.defenses import DETECTORS, DetectionResult, Detector, build_detector, detector_names
from poisonlab.errors import ConfigError
from poisonlab.experiments.tasks_base import TaskContext
from poisonlab.metrics.detection import DetectionMetrics
from poisonlab.models import ModelConfig, Network, build_model, load_checkpoint, save_checkpoint
from poisonlab.train import TrainConfig, train_model
from poisonlab.train.recipes import default_recipe
from poisonlab.validation import (
    FRACTION,
    IMAGE_SIZE,
    SEED,
    ConstraintList,
    Interval,
    Text,
    check_param,
    reword_keywords,
    validate_params,
)

MODEL_CACHE_KIND = "model"
"""Cache kind of trained models (a checkpoint folder per key)."""


def check_keys(section: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """ConfigError naming the first key of ``section`` that is not in ``allowed``."""
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise ConfigError(f"[{where}] unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def as_written(message: str) -> str:
    """``message`` with the keywords it names as a config file writes them: ```window=(10,
    15)``` → ``window = [[10, 15]]`` (one list value is a list of lists, the grid rule),
    ```position='random'``` → ``position = "random"``, ```offset``` → ``offset``."""

    def written(key: str, value: str | None) -> str:
        if value is None:
            return key
        if re.fullmatch(r"'[^'\"]*'", value):
            value = f'"{value[1:-1]}"'
        elif re.fullmatch(r"\(-?\d+(?:, -?\d+)*,?\)", value):
            value = f"[[{value[1:-1].rstrip(',')}]]"
        return f"{key} = {value}"

    return reword_keywords(message, written)


def attack_error(exc: ConfigError, name: str) -> ConfigError:
    """``exc`` as a config's ``[attack]`` error: the section and attack first, keywords as
    written (:func:`as_written`)."""
    text = as_written(str(exc))
    return ConfigError(f"[attack] {text}" if text.startswith(name) else f"[attack] {name}: {text}")


DATA_CONSTRAINTS: dict[str, ConstraintList] = {
    "source": [Text("a data spec (digits, fashion-mnist, NAME:PATH or a path)")],
    "limit": [None, Interval(Integral, 10, None)],
    "holdout": [FRACTION],
    "test": [FRACTION],
    "seed": [SEED],
    "image_size": [IMAGE_SIZE],
}
"""Constraints of the ``[data]`` keys."""


@dataclass(frozen=True)
class DataSpec:
    """The ``[data]`` section: which data and how it is split (hashable, so splits are memoised)."""

    source: str = "digits"
    limit: int | None = None
    holdout: float = 0.1
    test: float = 0.2
    seed: int = 0
    image_size: tuple[int, int] | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> DataSpec:
        """Validate ``[data]`` (keys, types and ranges; :mod:`poisonlab.validation`), fill defaults.

        Whether the source exists is :func:`poisonlab.data.loaders.check_source`'s job (it reads
        the file system, so a dry run calls it once per distinct source).
        """
        check_keys(section, tuple(f.name for f in fields(cls)), "data")
        spec = cls(**validate_params("[data]", DATA_CONSTRAINTS, dict(section)))
        if spec.holdout + spec.test >= 1.0:
            raise ConfigError(
                f"[data] holdout ({spec.holdout:g}) + test ({spec.test:g}) leave no training data"
            )
        return spec

    def key(self) -> dict[str, Any]:
        """JSON-ready identity of the data (part of every model key). Without an image size it
        is the key of the sections that had no such key, so their cached models stay valid."""
        key = asdict(self)
        if self.image_size is None:
            del key["image_size"]
        else:
            key["image_size"] = list(self.image_size)
        return key

    def loader_options(self) -> dict[str, Any]:
        """The options ``load_dataset`` gets for this data (the ``image_size``, as the commands'
        ``--image-size``: :func:`poisonlab.data.loaders.resize_options`); a source whose format
        is not resized refuses an image size in one line naming the key. Reads headers only."""
        from poisonlab.data.loaders import resize_options

        if self.image_size is None:
            return {}
        height, width = self.image_size
        given = f"[data] image_size {height}x{width}"
        return resize_options(
            self.source, self.image_size, given=given, named=f"source {self.source}"
        )


@functools.lru_cache(maxsize=2)
def load_split(spec: DataSpec) -> Split:
    """Train / held-out / test parts of ``spec`` (memoised: cells of one grid share a load)."""
    from poisonlab.data.prepare import prepare_splits

    return prepare_splits(
        spec.source,
        holdout=spec.holdout,
        test=spec.test,
        seed=spec.seed,
        limit=spec.limit,
        **spec.loader_options(),
    )


def model_config(
    section: Mapping[str, Any], data: ImageDataset, *, default_arch: str, **fixed: Any
) -> ModelConfig:
    """A ModelConfig from ``[model]`` (``arch`` + ModelConfig fields) and the data's geometry.

    ``fixed`` fields (e.g. ``head="lgm"``) override the section; the section may not set them.
    """
    params = dict(section)
    clash = sorted(set(params) & set(fixed))
    if clash:
        raise ConfigError(f"[model] {clash[0]} is set by this task; remove it from the config")
    arch = params.pop("arch", default_arch)
    c, h, w = data.shape
    try:
        return ModelConfig(arch, c, h, w, data.num_classes, **params, **fixed)
    except TypeError as exc:
        raise ConfigError(f"[model] has an unknown key ({exc})") from None


def train_recipe(section: Mapping[str, Any], arch: str, n_samples: int, seed: int) -> TrainConfig:
    """The default recipe of ``arch`` for ``n_samples`` images with ``[train]`` applied.

    ``seed`` (the cell's) seeds initialisation and training unless ``[train] seed`` is given.
    """
    params = {"seed": seed, **dict(section)}
    try:
        return default_recipe(arch, n_samples, **params)
    except TypeError as exc:
        raise ConfigError(f"[train] has an unknown key ({exc})") from None


def cached_model(
    context: TaskContext,
    *,
    what: str,
    data_key: Mapping[str, Any],
    trained_on: Mapping[str, Any],
    config: ModelConfig,
    recipe: TrainConfig,
    data: ImageDataset,
    device: torch.device,
) -> tuple[Network, dict[str, Any]]:
    """A ``config`` network trained on ``data`` with ``recipe``, through the cache.

    Parameters
    ----------
    context : TaskContext
        Its cache stores the checkpoint (``save_checkpoint`` format) under the model key.
    what : str
        Human name for the log (``clean model``, ``victim``...); not part of the key.
    data_key : mapping
        :meth:`DataSpec.key` of the data the training set derives from.
    trained_on : mapping
        What exactly was trained on: ``{"clean": "train"}`` or the attack's resolved parameters
        and seed; together with the data key it identifies ``data``.
    config, recipe : ModelConfig, TrainConfig
    data : ImageDataset
        The training set (used only on a cache miss).
    device : torch.device

    Returns
    -------
    (Network in eval mode on ``device``, the checkpoint's ``extra`` dict with the training record)
    """
    key = {
        "poisonlab": poisonlab.__version__,
        "data": dict(data_key),
        "trained_on": dict(trained_on),
        "model": config.to_dict(),
        "train": recipe.to_dict(),
    }
    trained = False

    def create(folder: Path) -> None:
        nonlocal trained
        trained = True
        context.log(f"training the {what} ({config.arch}, {config.head}) on {len(data)} images")
        model = build_model(config, seed=recipe.seed)
        started = time.perf_counter()
        history = train_model(model, data, recipe, device=device, description=f"training {what}")
        record = {
            "epochs_run": len(history.history),
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
            "seconds": round(time.perf_counter() - started, 2),
            "n_train": len(data),
        }
        save_checkpoint(model, folder, training=record, key=key)

    path = context.cache.get_or_create(MODEL_CACHE_KIND, key, create)
    if not trained:
        context.log(f"reusing the cached {what} ({config.arch}, {config.head})")
    checkpoint = load_checkpoint(path, expect=config, device=device)
    return checkpoint.model, dict(checkpoint.extra)


def build_detectors(entries: list[dict[str, Any]], *, seed: int) -> list[Detector]:
    """One detector per ``[[defenses]]`` entry (``name`` + constructor keywords).

    Detectors that take a ``seed`` get the cell's unless the entry sets one; a ``threshold`` may be
    written as text (``contamination:0.1``...) and defaults to ``paper``: experiments reproduce
    the papers' rules, where ``poisonlab scan`` defaults to the per-class verdicts. Names must be
    unique (metrics are per name).
    """
    names = detector_names()
    detectors: list[Detector] = []
    for entry in entries:
        params = dict(entry)
        name = params.pop("name", None)
        if name not in names:
            raise ConfigError(f"[[defenses]] name {name!r} is not one of: {', '.join(names)}")
        if any(d.name == name for d in detectors):
            raise ConfigError(f"[[defenses]] lists {name!r} twice (metrics are per name)")
        accepted = _keywords(DETECTORS.get(name))
        wrong = sorted(set(params) - accepted)
        if wrong:
            raise ConfigError(f"{name} does not take {wrong[0]!r}; it takes: {sorted(accepted)}")
        if "seed" in accepted and "seed" not in params:
            params["seed"] = seed
        params.setdefault("threshold", "paper")
        if isinstance(params.get("classes"), int):
            params["classes"] = [params["classes"]]
        detectors.append(build_detector(name, **params))
    return detectors


def _keywords(cls: type[Detector]) -> set[str]:
    """Keyword-only constructor parameters of a detector class."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}


def detection_metrics(
    name: str, metrics: DetectionMetrics, result: DetectionResult
) -> dict[str, float | int]:
    """``defense.<name>.<metric>`` entries of the metric naming convention (tasks_base).

    ``n_poison`` (poisons among the analysed samples) is added beside ``n_analysed``.
    """
    prefix = f"defense.{name}."
    values: dict[str, float | int] = {
        "acc": metrics.accuracy,
        "tpr": metrics.tpr,
        "tnr": metrics.tnr,
        "precision": metrics.precision,
        "auroc": metrics.auroc,
        "aupr": metrics.aupr,
        "aupr_in": metrics.aupr_in,
        "tpr_at_fpr": metrics.tpr_at_fpr,
        "n_flagged": metrics.n_flagged,
        "n_analysed": metrics.n,
        "n_poison": metrics.n_poison,
        "seconds": float(result.seconds),
    }
    return {prefix + key: value for key, value in values.items()}


def as_array(value: Tensor | np.ndarray | list[Any]) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def write_npz(folder: Path, name: str, arrays: Mapping[str, Any]) -> Path:
    """Write ``folder/name`` atomically (a temporary file renamed into place)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / (name + ".partial.npz")
    payload: dict[str, Any] = {k: as_array(v) for k, v in arrays.items()}
    np.savez_compressed(tmp, **payload)
    tmp.replace(path)
    return path


def scores_arrays(
    is_poison: Tensor, labels: Tensor, results: Mapping[str, DetectionResult]
) -> dict[str, np.ndarray]:
    """The ``scores.npz`` arrays: ground truth, claimed labels, and per defense scores and flags.

    ``analysed`` marks samples at least one defense analysed; ``analysed__<name>`` is per defense
    (scores are NaN where a defense did not look).
    """
    analysed = torch.zeros(len(labels), dtype=torch.bool)
    arrays: dict[str, np.ndarray] = {
        "is_poison": as_array(is_poison).astype(bool),
        "labels": as_array(labels).astype(np.int64),
    }
    for name, result in results.items():
        analysed |= result.analysed
        arrays[f"score__{name}"] = as_array(result.scores).astype(np.float64)
        arrays[f"flagged__{name}"] = as_array(result.flagged).astype(bool)
        arrays[f"analysed__{name}"] = as_array(result.analysed).astype(bool)
    arrays["analysed"] = as_array(analysed)
    return arrays


def task_option(
    section: Mapping[str, Any], key: str, default: Any, constraints: ConstraintList
) -> Any:
    """``[task] key`` checked against ``constraints`` (:mod:`poisonlab.validation`), or ``default``.

    A missing key takes ``default`` unchecked (it may be None: "use the default schedule").
    """
    if key not in section:
        return default
    return check_param("[task]", key, section[key], constraints)


def heatmap_arrays(
    data: ImageDataset, is_poison: Tensor, results: Mapping[str, DetectionResult]
) -> dict[str, Any]:
    """``heatmaps.npz`` arrays from every defense that exposes its most suspicious heatmaps.

    A defense exposes them as ``extras["top_heatmaps"] = {"index": rows, "heatmaps": (k, H, W)}``
    (Heatmap Clustering; ``top_heatmaps`` sets k), most suspicious first. Per such defense:
    ``index__<name>``, ``images__<name>``, ``heatmaps__<name>``, ``scores__<name>``,
    ``is_poison__<name>`` and ``labels__<name>``. Empty when no defense exposes heatmaps.
    """
    arrays: dict[str, Any] = {}
    for name, result in results.items():
        top = result.extras.get("top_heatmaps")
        if not isinstance(top, Mapping) or not len(top.get("index", ())):
            continue
        rows = torch.as_tensor(top["index"], dtype=torch.long)
        maps = torch.as_tensor(np.asarray(top["heatmaps"], dtype=np.float32))
        if maps.shape[0] != len(rows):
            raise ValueError(f"{name} exposes {maps.shape[0]} heatmaps for {len(rows)} rows")
        arrays |= {
            f"index__{name}": rows,
            f"images__{name}": data.images[rows],
            f"heatmaps__{name}": maps,
            f"scores__{name}": result.scores[rows],
            f"is_poison__{name}": is_poison[rows],
            f"labels__{name}": data.labels[rows],
        }
    return arrays
