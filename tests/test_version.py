"""One version number: the package's metadata (pyproject.toml), not a second literal."""

from __future__ import annotations

from importlib.metadata import version

import poisonlab


def test_version_comes_from_the_package_metadata() -> None:
    assert poisonlab.__version__ == version("poisonlab")
