"""Docstrings read as written in ``help()``: a bullet's continuation lines stay indented under it
(several once broke mid-sentence to column 0, "RGB (245, 255,\\n0) at a"), and the metrics
package's docstring names functions that exist where it says."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import poisonlab.metrics
from tests.dotted_names import resolves

SRC = Path(__file__).resolve().parents[2] / "src" / "poisonlab"


def unindented_continuations(doc: str) -> list[str]:
    """Lines inside a ``-``/``*`` bullet (before a blank line or the next bullet) that start at
    column 0: a wrap that lost its indent."""
    broken, in_bullet = [], False
    for line in doc.splitlines():
        if not line.strip():
            in_bullet = False
        elif line.startswith(("- ", "* ")):
            in_bullet = True
        elif in_bullet and not line.startswith(" "):
            broken.append(line)
    return broken


def test_the_checker_finds_a_broken_wrap():
    assert unindented_continuations("- a (245, 255,\n0) at a\n  b\n\nprose\n- c\n  d") == [
        "0) at a"
    ]


def test_bullet_continuations_are_indented():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [
            tree,
            *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)),
        ]
        for node in nodes:
            doc = ast.get_docstring(node)  # type: ignore[arg-type]
            for line in unindented_continuations(doc or ""):
                found.append(f"{path.relative_to(SRC)} {getattr(node, 'name', '')}: {line!r}")
    assert found == []


def test_the_metrics_package_names_where_each_metric_lives():
    doc = poisonlab.metrics.__doc__ or ""
    names = []
    for module, text in re.findall(
        r":mod:`(poisonlab\.metrics\.\w+)`: (.*?)(?=\n- |\Z)", doc, re.S
    ):
        names += [f"{module}.{name}" for name in re.findall(r"``(\w+)[`(]", text)]
    assert len(names) >= 10
    assert [name for name in names if not resolves(name)] == []
