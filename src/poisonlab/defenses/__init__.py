"""Defenses: detectors that give every training sample a suspicion score (higher = more suspicious)."""

from __future__ import annotations

from poisonlab.defenses.base import DETECTORS, DetectionResult, Detector, register_detector
from poisonlab.defenses.evidence import Evidence
from poisonlab.defenses.thresholds import (
    Contamination,
    FixedValue,
    PaperRule,
    ScoreSet,
    TargetFPR,
    Threshold,
    parse_threshold,
)

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
    """Instantiate the defense registered as ``name`` with keyword hyper-parameters."""
    _load_detectors()
    return DETECTORS.get(name)(**params)  # type: ignore[arg-type]
