"""``poisonlab.scan``: the public name of the scan pipeline, what ``poisonlab scan`` runs.

The code lives at the workflows layer, :mod:`poisonlab.workflows.scan` (run the detectors over a
suspect training set, decide, return a :class:`ScanResult`) and
:mod:`poisonlab.workflows.scan_output` (its files: ``scores.csv``, ``summary.json``,
``clean.npz``); this package only re-exports their public names, so user code can write
``from poisonlab.scan import scan``. To patch the pipeline in a test, patch the workflows modules.
"""

from __future__ import annotations

from poisonlab.workflows.scan import (
    DefenseOutcome,
    ModelUsed,
    ScanResult,
    build_detectors,
    default_architecture,
    resolve_defenses,
    scan,
    train_default_model,
)
from poisonlab.workflows.scan_output import scan_summary, write_scan

__all__ = [
    "DefenseOutcome",
    "ModelUsed",
    "ScanResult",
    "build_detectors",
    "default_architecture",
    "resolve_defenses",
    "scan",
    "scan_summary",
    "train_default_model",
    "write_scan",
]
