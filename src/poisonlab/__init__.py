"""poisonlab: find poisoned training data, and attack and defend image classifiers reproducibly.

The top-level import stays light: submodules (``poisonlab.data``, ``poisonlab.models``,
``poisonlab.attacks``, ``poisonlab.defenses``...) are imported on demand, and nothing here pulls in
torchvision or matplotlib.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "attacks",
    "data",
    "defenses",
    "errors",
    "experiments",
    "explain",
    "metrics",
    "models",
    "reports",
    "train",
]
