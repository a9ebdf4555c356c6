"""Defenses: detectors that give every training sample a suspicion score (higher = more suspicious)."""

from __future__ import annotations

from poisonlab.defenses.base import (
    DETECTORS,
    DetectionResult,
    Detector,
    TransductiveError,
    register_detector,
)
from poisonlab.defenses.evidence import Evidence
from poisonlab.defenses.thresholds import (
    Contamination,
    FixedValue,
    PaperRule,
    ScoreSet,
    TargetFPR,
    Threshold,
    VerdictRule,
    parse_threshold,
)
from poisonlab.validation import check_keywords

__all__ = [
    "DETECTORS",
    "Contamination",
    "DetectionResult",
    "Detector",
    "Evidence",
    "FixedValue",
    "PaperRule",
    "ScoreSet",
    "TargetFPR",
    "Threshold",
    "TransductiveError",
    "VerdictRule",
    "build_detector",
    "detector_names",
    "parse_threshold",
    "register_detector",
]


def _load_detectors() -> None:
    """Import the detector modules so their decorators fill DETECTORS."""
    import importlib
    import pkgutil

    import poisonlab.defenses as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in {"base", "evidence", "thresholds"} and not module.name.startswith(
            "_"
        ):
            importlib.import_module(f"poisonlab.defenses.{module.name}")


def detector_names() -> list[str]:
    """Registered defense names."""
    _load_detectors()
    return DETECTORS.names()


def build_detector(name: str, **params: object) -> Detector:
    """Instantiate the defense registered as ``name`` with keyword hyper-parameters.

    Raises
    ------
    ConfigError
        An unknown name or keyword (naming the accepted ones), or a value its constructor refuses.
    """
    _load_detectors()
    cls = DETECTORS.get(name)
    check_keywords(name, cls, params)
    return cls(**params)  # type: ignore[arg-type]  # each value checked by the constructor
