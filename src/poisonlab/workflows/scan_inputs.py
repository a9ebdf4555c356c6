"""The inputs of :func:`poisonlab.workflows.scan.scan`, checked before any work.

Data, held-out set and model may come as objects or as paths (loaded here), a threshold as an
object or its text; each is refused by name when it cannot serve (a model that does not fit the
images or classes, a held-out set of other classes, classes with no images, a held-out-calibrated
cut with no defense to calibrate, a layer the model does not have). Every check runs before a
model is trained.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import DETECTORS, Detector
from poisonlab.defenses.fusion import decision_members
from poisonlab.defenses.thresholds import Threshold, parse_threshold
from poisonlab.errors import CheckpointError, ConfigError, DataError
from poisonlab.models import Checkpoint, Network
from poisonlab.models.activations import resolve_layers

logger = logging.getLogger(__name__)


def model_fields(data: ImageDataset) -> dict[str, int]:
    """The model config fields a model must have to read ``data``: image shape and classes (the
    ``expect`` of :func:`poisonlab.models.load_checkpoint`)."""
    c, h, w = data.shape
    return {"in_channels": c, "height": h, "width": w, "num_classes": data.num_classes}


def as_dataset(value: object, what: str) -> ImageDataset:
    """``value`` itself when it is an ImageDataset; a path or data spec is loaded."""
    if isinstance(value, ImageDataset):
        return value
    if isinstance(value, str | PathLike):
        from poisonlab.data.loaders import load_dataset

        return load_dataset(value if isinstance(value, str) else Path(value))
    hint = ""
    if isinstance(getattr(value, "dataset", None), ImageDataset):  # an attack's PoisonedDataset
        hint = ": pass its .dataset"
    raise ConfigError(
        f"{what} must be an ImageDataset or a data path/name, got {type(value).__name__}{hint}"
    )


def as_model(
    value: object, data: ImageDataset, what: str = "the model"
) -> Network | Checkpoint | None:
    """The model to borrow: a Network, a Checkpoint, or a checkpoint folder (loaded, and checked
    to fit ``data``); a Network or Checkpoint that does not fit ``data`` is refused too, naming
    ``what`` and the checkpoint's folder."""
    if value is None:
        return None
    if isinstance(value, str | PathLike):
        from poisonlab.models import load_checkpoint

        value = load_checkpoint(value if isinstance(value, str) else Path(value))
    if not isinstance(value, Network | Checkpoint):
        raise ConfigError(
            f"{what} must be a Network, a Checkpoint or a checkpoint folder, got "
            f"{type(value).__name__}"
        )
    config = (value.model if isinstance(value, Checkpoint) else value).config
    diffs = [
        f"{key} {getattr(config, key)} (data: {expected})"
        for key, expected in model_fields(data).items()
        if getattr(config, key) != expected
    ]
    if diffs:
        raise ConfigError(
            f"{what}{_folder(value)} does not fit data set {data.name!r}: " + ", ".join(diffs)
        )
    return value


def as_lgm_model(
    value: object, data: ImageDataset, what: str = "`lgm_model`"
) -> Network | Checkpoint | None:
    """The LGM model to borrow (``lgm_model``): as :func:`as_model`, and refused when its head is
    not an LGM head; every message names ``what`` and the checkpoint's folder."""
    try:
        found = as_model(value, data, what)
    except CheckpointError as exc:  # a folder that is no checkpoint: say which input it was
        raise CheckpointError(f"{what}: {exc}") from None
    network = found.model if isinstance(found, Checkpoint) else found
    if network is not None and not network.is_lgm:
        raise ConfigError(
            f"{what}{_folder(found)} is a {network.config.arch} with a {network.config.head} head; "
            "expected a model trained with the LGM loss (the lgm-model folder a scan writes, or "
            "poisonlab train --loss lgm)"
        )
    return found


def check_inputs(
    data: ImageDataset, holdout: ImageDataset | None, classes: Sequence[int] | None
) -> None:
    """Refuse data with no images, a held-out set of another image shape, class count or class
    names (saying which, and what to do), and ``classes`` that do not exist or (all of them) hold
    no image; warn of the empty ones, and of a held-out set that shares samples with the data."""
    if len(data) == 0:
        raise DataError(f"data set {data.name!r} has no images")
    if holdout is not None and holdout.shape != data.shape:
        raise DataError(
            f"held-out set {holdout.name!r} (images {holdout.shape}) does not match data set "
            f"{data.name!r} (images {data.shape}){_shape_hint(holdout.shape, data.shape)}"
        )
    if holdout is not None and holdout.num_classes != data.num_classes:
        hint = ""
        if holdout.class_names == data.class_names[: holdout.num_classes]:
            hint = (
                f" (its largest label is {holdout.num_classes - 1}: a held-out .npz without "
                "class_names takes its classes from its labels; save it with class_names, as "
                "poisonlab.data.save_npz does, or include every class)"
            )
        else:
            hint = f" ({_missing(holdout, data)})"
        raise DataError(
            f"held-out set {holdout.name!r} ({holdout.num_classes} classes) does not match data "
            f"set {data.name!r} ({data.num_classes} classes){hint}"
        )
    if holdout is not None and _named(data) and _named(holdout):
        _check_class_names(data, holdout)
    shared = 0 if holdout is None else shared_samples(data, holdout)
    if holdout is not None and shared:  # e.g. --holdout given the scanned file again
        logger.warning(
            "held-out set %r shares %d of its %d samples with data set %r (the same ids and "
            "pixels): the clean reference should be samples kept apart from the data scanned",
            holdout.name,
            shared,
            len(holdout),
            data.name,
        )
    for c in classes or ():
        if not 0 <= int(c) < data.num_classes:
            raise ConfigError(
                f"`classes`: class {c} does not exist in data set {data.name!r} "
                f"(0..{data.num_classes - 1})"
            )
    if classes:
        counts = data.class_counts()
        empty = [int(c) for c in classes if counts[int(c)] == 0]
        if len(empty) == len(classes):
            raise DataError(
                f"data set {data.name!r} has no images of the class(es) to analyse "
                f"({', '.join(map(str, empty))}); per-class defenses would find nothing to judge"
            )
        if empty:
            logger.warning(
                "data set %r has no images of class(es) %s: per-class defenses skip them",
                data.name,
                ", ".join(map(str, empty)),
            )


def _shape_hint(held: tuple[int, ...], ours: tuple[int, ...]) -> str:
    """What to do about a held-out set of another image shape: another size, or gray vs colour."""
    hints = []
    if held[1:] != ours[1:]:
        hints.append(
            "load both at one size: --image-size HxW, or load_dataset(path, size=(height, "
            "width)) in Python, for image folders and GTSRB"
        )
    if held[0] != ours[0]:
        gray = "the held-out set" if held[0] == 1 else "the data"
        hints.append(
            f"{gray} is grayscale and the other in colour: convert one so that both have "
            "the same channels (an image folder loads as colour when any of its images is)"
        )
    return f" ({'; '.join(hints)})" if hints else ""


def _named(data: ImageDataset) -> bool:
    """True when ``data``'s class names are its own, not the numbers 0..K-1 given to data
    without names (an .npz without class_names), which say nothing about which class is which."""
    return data.class_names != tuple(map(str, range(data.num_classes)))


def _missing(holdout: ImageDataset, data: ImageDataset) -> str:
    """The class names one of two data sets has and the other lacks, quoted."""
    lacks = [n for n in data.class_names if n not in holdout.class_names]
    extra = [n for n in holdout.class_names if n not in data.class_names]
    parts = []
    if lacks:
        parts.append(f"it has no class {', '.join(map(repr, lacks))}")
    if extra:
        parts.append(f"the data has no class {', '.join(map(repr, extra))}")
    return "; ".join(parts) or "the class names differ"


def _check_class_names(data: ImageDataset, holdout: ImageDataset, shown: int = 3) -> None:
    """Refuse a held-out set whose classes have other names than the data's: classes are matched
    by number (an image folder numbers its class folders in sorted order), so one renamed or
    missing folder would compare each held-out class with another class of the data."""
    differ = [
        (c, theirs, ours)
        for c, (theirs, ours) in enumerate(zip(holdout.class_names, data.class_names, strict=True))
        if theirs != ours
    ]
    if not differ:
        return
    pairs = ", ".join(f"class {c} is {t!r} there and {o!r} here" for c, t, o in differ[:shown])
    more = f" and {len(differ) - shown} more" if len(differ) > shown else ""
    raise DataError(
        f"held-out set {holdout.name!r} names its classes differently from data set "
        f"{data.name!r}: {pairs}{more}; classes are matched by number (an image folder's in the "
        "sorted order of its class folders), so its images would stand for other classes; give "
        "both the same class names"
    )


def shared_samples(data: ImageDataset, holdout: ImageDataset, chunk: int = 4096) -> int:
    """How many samples of ``holdout`` are samples of ``data``: the same id and the same pixels.

    Ids alone repeat across files of one name (``data.npz#0`` of two folders, the IDX file names
    of two MNIST-style folders), so a shared id counts only when its image is the same too.
    """
    index = {sample_id: k for k, sample_id in enumerate(data.ids.tolist())}
    pairs = [(k, index[i]) for k, i in enumerate(holdout.ids.tolist()) if i in index]
    same = 0
    for start in range(0, len(pairs), chunk):
        mine, theirs = (list(rows) for rows in zip(*pairs[start : start + chunk], strict=True))
        equal = holdout.images[mine] == data.images[theirs]
        same += int(equal.flatten(1).all(1).sum())
    return same


def as_threshold(threshold: object) -> Threshold | None:
    """A Threshold from itself, its text form or None (the default); anything else is refused."""
    if threshold is None or isinstance(threshold, Threshold):
        return threshold
    if isinstance(threshold, str):
        return parse_threshold(threshold)
    raise ConfigError(
        f"threshold must be a Threshold or its text (verdict, verdict:A, paper, contamination:F, "
        f"fpr:F, value:V), got {threshold!r}"
    )


def check_threshold(threshold: Threshold | None, *, holdout_given: bool) -> None:
    """Refuse, before any work, a threshold that needs clean held-out scores without a held-out set."""
    if threshold is not None and threshold.needs_reference and not holdout_given:
        raise ConfigError(
            f"threshold {threshold.describe()} cuts on the scores of clean held-out samples; "
            "give a clean held-out set (holdout), or use verdict, paper, contamination:F or value:V"
        )


def check_reference_members(
    threshold: Threshold | None, decision: str, detectors: Sequence[Detector]
) -> None:
    """Refuse, before any training, a held-out-calibrated cut of the combined score when none of
    the defenses that will run can give it: the combined score is made of the defenses that give
    class verdicts and score new samples (the held-out set is scored through them)."""
    if threshold is None or not threshold.needs_reference or decision != "verdict":
        return
    members = decision_members()
    if any(d.inductive and d.name in members for d in detectors):
        return
    able = [n for n in members if DETECTORS.get(n).inductive]
    selected = ", ".join(d.name for d in detectors) or "none that can run"
    raise ConfigError(
        f"threshold {threshold.describe()} cuts the combined score of the defenses that give "
        f"class verdicts, calibrated on the held-out set, and none of the selected defenses "
        f"({selected}) gives one: add one of {', '.join(able)}, or the union decision "
        "(decision='union', --decision union: each defense's own flags at that threshold)"
    )


def check_layers(detectors: Sequence[Detector], network_for: Callable[[bool], Network]) -> None:
    """Each detector's ``layer`` names a module of the model it will read, ``network_for(lgm)``
    (the given model, or an untrained one of the architecture to be trained): a typo is refused
    here, before training, instead of skipping the detector once the model is trained."""
    for detector in detectors:
        layer = getattr(detector, "layer", None)
        if isinstance(layer, str):
            try:
                resolve_layers(network_for(detector.needs_lgm), [layer])
            except ConfigError as exc:
                raise ConfigError(f"{detector.name} layer: {exc}") from None


def _folder(model: object) -> str:
    """`` <folder>`` of a checkpoint read from disk, for messages; empty for a model in memory."""
    return f" {model.path}" if isinstance(model, Checkpoint) and model.path else ""
