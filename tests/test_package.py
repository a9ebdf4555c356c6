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


def test_help_of_the_public_packages_is_for_users_not_for_tests() -> None:
    """help(poisonlab.scan) told users how to patch the pipeline in a test; it says what scan
    does, what it returns and raises."""
    scan = importlib.import_module("poisonlab.scan")
    doc = scan.__doc__ or ""
    assert "returns a :class:`ScanResult`" in doc and "raises" in doc and "write_scan" in doc
    for name in poisonlab.__all__:
        if name != "__version__":
            text = importlib.import_module(f"poisonlab.{name}").__doc__ or ""
            assert "patch" not in text and "monkeypatch" not in text, name
    assert "Returns" in (scan.scan.__doc__ or "") and "module docstring" not in scan.scan.__doc__
