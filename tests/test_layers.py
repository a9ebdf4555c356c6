"""Imports point one way: data → models → train → explain → attacks/defenses → metrics → workflows
→ experiments → reports → cli, with the small shared modules (errors, validation, seeding, ...)
below all of them.

Every ``import`` in the package is read from the source (also those inside functions and under
``TYPE_CHECKING``, which hide a dependency just as well), and each must go to the same layer or a
lower one; attacks and defenses, side by side, may not import each other. A new top-level module or
subpackage must be placed in :data:`LAYERS` (the test says so), so the rule cannot be dodged.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import poisonlab

PACKAGE = Path(poisonlab.__file__).parent

#: Layer of every top-level module or subpackage of poisonlab, lowest first.
LAYERS: dict[str, int] = {
    # shared helpers, imported from anywhere
    "__init__": 0,
    "errors": 0,
    "registry": 0,
    "seeding": 0,
    "device": 0,
    "progress": 0,
    "ranges": 0,
    "runtime": 0,
    "validation": 0,
    "versions": 0,
    "data": 1,
    "models": 2,
    "train": 3,
    "explain": 4,
    "attacks": 5,
    "defenses": 5,
    "metrics": 6,
    "workflows": 7,
    # poisonlab.scan only re-exports poisonlab.workflows.scan / scan_output (the public name)
    "scan": 7,
    "experiments": 8,
    "reports": 9,
    "cli": 10,
    "__main__": 10,  # python -m poisonlab: the CLI
}
#: Layers whose members may not import each other (siblings, not a stack).
SIBLINGS = [{"attacks", "defenses"}]


def top_level(module: str) -> str:
    """``poisonlab.models.network`` → ``models``; ``poisonlab`` itself → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported poisonlab module) for every import statement in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("poisonlab")]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: use absolute imports"
            module = node.module or ""
            if module == "poisonlab":  # from poisonlab import attacks, __version__
                found += [(node.lineno, f"poisonlab.{a.name}") for a in node.names]
            elif module.startswith("poisonlab."):
                found.append((node.lineno, module))
    return found


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def owner(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def violations(path: Path) -> list[str]:
    """Every import in ``path`` that goes up a layer or sideways between siblings."""
    source = owner(path)
    problems = []
    for line, module in imports_of(path):
        target = top_level(module)
        if target == source or target not in LAYERS:
            continue  # unknown targets (e.g. __version__) are checked by the layer map test
        sideways = any({source, target} <= group and source != target for group in SIBLINGS)
        if LAYERS[target] > LAYERS[source] or sideways:
            where = path.relative_to(PACKAGE.parent)
            problems.append(f"{where}:{line} ({source}, layer {LAYERS[source]}) imports {module}")
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = {owner(p) for p in source_files()} - set(LAYERS)
    assert not unplaced, f"place these in LAYERS (tests/test_layers.py): {sorted(unplaced)}"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    problems = violations(path)
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_upward_and_a_sideways_import(tmp_path: Path, monkeypatch) -> None:
    """The rule itself: a models module importing metrics (lazily), an attack importing a
    defense, and a ``from poisonlab import reports`` are all reported."""
    fake = tmp_path / "poisonlab"
    (fake / "models").mkdir(parents=True)
    (fake / "attacks").mkdir()
    (fake / "__init__.py").write_text("")
    lazy = "def f():\n    from poisonlab.metrics.detection import auroc\n    return auroc\n"
    (fake / "models" / "bad.py").write_text(lazy)
    (fake / "attacks" / "bad.py").write_text("from poisonlab.defenses.base import Detector\n")
    (fake / "attacks" / "worse.py").write_text("from poisonlab import reports\n")
    (fake / "attacks" / "fine.py").write_text("from poisonlab.models import network\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert violations(fake / "models" / "bad.py") == [
        "poisonlab/models/bad.py:2 (models, layer 2) imports poisonlab.metrics.detection"
    ]
    assert "imports poisonlab.defenses.base" in violations(fake / "attacks" / "bad.py")[0]
    assert "imports poisonlab.reports" in violations(fake / "attacks" / "worse.py")[0]
    assert violations(fake / "attacks" / "fine.py") == []


def test_scan_is_a_workflow_under_its_public_name() -> None:
    """The scan pipeline and its file output live in workflows/; ``poisonlab.scan`` re-exports the
    very same objects (no second implementation, no wrapper)."""
    import poisonlab.scan
    import poisonlab.workflows.scan
    import poisonlab.workflows.scan_output

    for module in (poisonlab.workflows.scan, poisonlab.workflows.scan_output):
        assert Path(module.__file__).parent == PACKAGE / "workflows"
    for name in poisonlab.scan.__all__:
        home = getattr(poisonlab.workflows.scan, name, None) or getattr(
            poisonlab.workflows.scan_output, name
        )
        assert getattr(poisonlab.scan, name) is home
