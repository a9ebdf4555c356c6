"""Which defenses a scan runs: names resolved from the registry, each built with its validated
parameters before any work, and the needs a detector cannot have met (:func:`unmet_need`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import DETECTORS, Detector, detector_names
from poisonlab.defenses.fusion import decision_members
from poisonlab.defenses.thresholds import Threshold
from poisonlab.errors import ConfigError
from poisonlab.models import Network
from poisonlab.validation import short_repr

DEFAULT_WHY = (
    "none named: the members of the combined decision, the defenses that give per-class verdicts "
    "and whose verdicts decide what is removed; the others are reported beside it, not part of it "
    '(docs/methods.md, "Combined decision")'
)
"""Why a scan that names no defense runs :func:`~poisonlab.defenses.fusion.decision_members`."""


def _listed(defenses: str | Sequence[str]) -> list[str]:
    """The names as given: ``defenses`` split at commas, stripped, empty ones dropped."""
    items = [defenses] if isinstance(defenses, str) else defenses
    if not isinstance(items, Sequence) or not all(isinstance(item, str) for item in items):
        raise ConfigError(
            "defenses must be 'all', a name, a comma-separated list or a list of names, got "
            f"{short_repr(defenses)}"
        )
    return [n.strip() for item in items for n in item.split(",") if n.strip()]


def resolve_defenses(defenses: str | Sequence[str] | None) -> list[str]:
    """Registry names from ``"all"``, one name, a comma-separated list or a sequence of them; None
    gives the members of the combined decision (:data:`DEFAULT_WHY`)."""
    if defenses is None:
        return decision_members()
    names = _listed(defenses)
    if not names:
        raise ConfigError("no defense selected; name one or use all")
    if "all" in names:
        return detector_names()
    known = detector_names()
    for name in names:
        DETECTORS.get(name)  # a ConfigError listing the choices for an unknown name
    return [n for n in known if n in names]


def selection_record(defenses: str | Sequence[str] | None, names: Sequence[str]) -> dict[str, Any]:
    """Which defenses a scan selected and why, for summary.json: ``from`` is "default" (none
    named), "all" or "named", ``defenses`` the resolved ``names``."""
    if defenses is None:
        return {"from": "default", "defenses": list(names), "why": DEFAULT_WHY}
    if "all" in _listed(defenses):
        return {"from": "all", "defenses": list(names), "why": "all: every registered defense"}
    return {"from": "named", "defenses": list(names), "why": "named by the caller"}


def unmet_need(
    detector: type[Detector],
    *,
    holdout: ImageDataset | None,
    model: Network | None,
    lgm_model: Network | None = None,
) -> str | None:
    """Why ``detector`` cannot run with what was given (None when it can).

    Without a model one is trained, so only a given non-LGM model with no ``lgm_model`` beside it
    blocks LGM detectors.
    """
    if detector.needs_holdout and holdout is None:
        return "needs a clean held-out set (`holdout`); none given"
    if detector.needs_lgm and lgm_model is None and model is not None and not model.is_lgm:
        return (
            "needs a model trained with the LGM loss; the given model has a softmax head and no "
            "LGM model was given (`lgm_model`)"
        )
    return None


def build_detectors(
    names: Sequence[str],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    threshold: Threshold | str | None = None,
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> list[Detector]:
    """One detector per name with its ``params``, every value validated before any work starts.

    Every selected detector is built, also one that will be skipped for want of a held-out set or
    an LGM model, so a bad parameter is reported at once rather than never. ``seed`` goes to every
    detector that takes one unless its ``params`` set it; ``classes`` to the per-class ones.

    Raises
    ------
    ConfigError
        Unknown names, parameters for a defense that is not selected, a keyword a defense does not
        take, or a value outside its range (naming the defense, the parameter and the range).
    """
    params = params or {}
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ConfigError(f"parameters given for {unknown[0]!r}, which is not selected")
    detectors: list[Detector] = []
    for name in names:
        cls = DETECTORS.get(name)
        kwargs = dict(params.get(name, {}))
        accepted = _init_keywords(cls) - {"self", "threshold", "classes"}
        wrong = sorted(set(kwargs) - accepted)
        if wrong:
            raise ConfigError(
                f"{name} does not take {wrong[0]!r} (it takes: {', '.join(sorted(accepted))})"
            )
        if "seed" in accepted and "seed" not in kwargs:
            kwargs["seed"] = seed
        if classes is not None and cls.per_class:
            kwargs["classes"] = list(classes)
        detectors.append(cls(threshold=threshold, **kwargs))
    return detectors


def _init_keywords(cls: type[Detector]) -> set[str]:
    """Keyword-only constructor parameters of a detector class."""
    import inspect

    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
