"""The installed versions a result depends on, recorded beside every stored result and report."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

#: The packages whose versions can change poisonlab's numbers.
PACKAGES = ("poisonlab", "torch", "numpy", "scikit-learn", "POT", "zennit", "bayesian-torch")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str | None]:
    """Installed versions of poisonlab and the packages its numbers depend on, plus Python."""
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["python"] = platform.python_version()
    return versions
