"""poisonlab: find poisoned training data, and attack and defend image classifiers reproducibly.

The top-level import stays light: submodules (``poisonlab.data``, ``poisonlab.models``,
``poisonlab.attacks``, ``poisonlab.defenses``, ``poisonlab.scan``...) are imported on demand, and
nothing here pulls in torch, torchvision or matplotlib.

Threads: importing poisonlab sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment unless you chose
a wait policy, so OpenMP's idle threads sleep instead of spinning; it takes effect when torch is
imported after poisonlab. ``poisonlab.runtime.use_threads(n)`` sets the thread count of torch and
the numeric libraries. It also lets glibc's malloc keep freed memory for reuse (fewer page
faults per training step; results unchanged) unless you tuned malloc through the environment.
Why, and the measurements: :mod:`poisonlab.runtime`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from poisonlab import runtime as _runtime

try:  # one version number: pyproject.toml's, as installed
    __version__ = _version("poisonlab")
except _NotInstalled:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

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
    "scan",
    "train",
]
