"""poisonlab: find poisoned training data, and attack and defend image classifiers reproducibly.

The top-level import stays light: submodules (``poisonlab.data``, ``poisonlab.models``,
``poisonlab.attacks``, ``poisonlab.defenses``...) are imported on demand, and nothing here pulls in
torch, torchvision or matplotlib.

Threads: importing poisonlab sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment unless you chose
a wait policy, so OpenMP's idle threads sleep instead of spinning; it takes effect when torch is
imported after poisonlab. ``poisonlab.runtime.use_threads(n)`` sets the thread count of torch and
the numeric libraries. Why, and the measurements: :mod:`poisonlab.runtime`.
"""

from __future__ import annotations

from poisonlab import runtime as _runtime

__version__ = "0.1.0"

_runtime.prepare()

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
    "runtime",
    "train",
]
