"""Every random draw in the test suite is seeded on the spot, so no test passes or fails by luck.

A test that draws from a global RNG (``torch.rand(...)`` without a generator, ``np.random.*``,
``random.*``, an estimator without ``random_state``) gets different inputs on every run, and
inputs that depend on which tests ran before it: it can fail on a fresh clone and pass when rerun.
This test reads the source of every test module (the syntax tree, not the text) and names each
such draw with its file and line. Draws take an explicit seed instead: ``generator=`` for torch,
``np.random.default_rng(seed)`` for NumPy, ``random_state=`` for scikit-learn; a test that must
seed torch's global RNG (a library that draws from it) does so inside ``torch.random.fork_rng()``,
so the state it leaves behind is the state it found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# torch functions that sample; each takes generator=
TORCH_SAMPLERS = {"rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial"}
TORCH_UNSEEDABLE = {"rand_like", "randn_like", "randint_like", "poisson", "seed"}
TENSOR_SAMPLERS = {"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "cauchy_"}
INIT_SAMPLERS = {"normal_", "uniform_", "trunc_normal_", "orthogonal_", "sparse_"}
INIT_SAMPLERS |= {f"{a}_{b}_" for a in ("kaiming", "xavier") for b in ("normal", "uniform")}
NUMPY_SEEDED = {"default_rng", "Generator", "SeedSequence", "PCG64", "RandomState"}
SKLEARN_RANDOM = {"KMeans", "MiniBatchKMeans", "PCA", "FastICA", "TSNE", "IncrementalPCA"}
SKLEARN_RANDOM |= {"TruncatedSVD", "RandomForestClassifier", "SGDClassifier", "MLPClassifier"}


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, '' otherwise."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def keywords(call: ast.Call) -> set[str | None]:
    return {k.arg for k in call.keywords}


def unseeded_draws(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, reason) for every draw in ``tree`` that is not seeded on the spot."""
    forked: set[int] = set()  # ids of calls inside `with torch.random.fork_rng(...)`
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call)
            and dotted(item.context_expr.func).endswith("fork_rng")
            for item in node.items
        ):
            forked |= {id(inner) for inner in ast.walk(node)}
    found = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        name = dotted(call.func)
        head, _, last = name.rpartition(".")
        kw = keywords(call)
        if head == "torch" and last in TORCH_SAMPLERS and "generator" not in kw:
            found.append((call.lineno, f"{name}() without generator="))
        elif head == "torch" and last in TORCH_UNSEEDABLE:
            found.append((call.lineno, f"{name}() draws from the global RNG"))
        elif name == "torch.manual_seed" and id(call) not in forked:
            found.append((call.lineno, "torch.manual_seed() outside torch.random.fork_rng()"))
        elif head.endswith("init") and last in INIT_SAMPLERS and "generator" not in kw:
            found.append((call.lineno, f"{name}() without generator="))
        elif (
            head.split(".")[0] not in {"", "torch", "np", "numpy", "random"}
            and last in TENSOR_SAMPLERS
            and "generator" not in kw
        ):
            found.append((call.lineno, f".{last}() without generator="))
        if head in {"np.random", "numpy.random"}:
            if last == "get_state":
                pass  # reading the global state (to check it is left alone) draws nothing
            elif last not in NUMPY_SEEDED:
                found.append((call.lineno, f"{name}() uses NumPy's global RNG"))
            elif not call.args and "seed" not in kw:
                found.append((call.lineno, f"{name}() without a seed"))
        elif head == "random" and last != "getstate":
            found.append((call.lineno, f"{name}() uses Python's global RNG"))
        elif last in SKLEARN_RANDOM and not head.startswith("torch") and "random_state" not in kw:
            found.append((call.lineno, f"{last}() without random_state="))
    return sorted(found)


MODULES = sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(TESTS)))
def test_every_random_draw_is_seeded(path: Path) -> None:
    draws = unseeded_draws(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    assert not draws, "\n".join(f"{path.name}:{line}: {why}" for line, why in draws)


def test_the_check_finds_each_kind_of_unseeded_draw() -> None:
    source = """
import random
import numpy as np
import torch
from sklearn.cluster import KMeans

def bad():
    torch.rand(3)
    torch.randn_like(x)
    torch.manual_seed(0)
    x.normal_()
    torch.nn.init.normal_(w)
    np.random.rand(3)
    np.random.default_rng()
    random.random()
    KMeans(2)

def good():
    torch.rand(3, generator=g)
    x.normal_(generator=g)
    torch.nn.init.normal_(w, generator=g)
    np.random.default_rng(0).random(3)
    KMeans(2, random_state=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
"""
    lines = [line for line, _ in unseeded_draws(ast.parse(source))]
    assert lines == list(range(8, 17))
