"""The top-level package: ``__all__`` names its public subpackages, scan among them, and
``import poisonlab`` imports none of them (the CLI answers --help without torch)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import poisonlab


def test_all_names_the_public_subpackages_scan_among_them() -> None:
    assert "scan" in poisonlab.__all__  # the library's main workflow, poisonlab.scan.scan
    for name in poisonlab.__all__:
        if name != "__version__":
            assert importlib.import_module(f"poisonlab.{name}").__name__ == f"poisonlab.{name}"
    assert callable(importlib.import_module("poisonlab.scan").scan)


def test_importing_poisonlab_imports_no_subpackage_and_no_torch() -> None:
    code = (
        "import sys, poisonlab; "
        "print(sorted(m for m in sys.modules if m in ('torch', 'matplotlib', 'sklearn') "
        "or m.startswith('poisonlab.') and m not in ('poisonlab.runtime', 'poisonlab.errors')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"
