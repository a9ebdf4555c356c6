"""README's "Python API" names resolve where it says they live (it once listed clean_accuracy,
predict and measure_backdoor under packages that do not export them: an ImportError on copy)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.dotted_names import resolve

README = Path(__file__).resolve().parents[2] / "README.md"


def api_section() -> str:
    text = README.read_text()
    return text.split("## Python API\n", 1)[1].split("\n## ", 1)[0]


def test_every_dotted_name_resolves() -> None:
    section = " ".join(api_section().split())  # names may be wrapped across lines
    names = set(re.findall(r"`(poisonlab(?:\.\w+)+)", section))
    assert len(names) > 10  # the section names its modules in full
    missing = []
    for name in sorted(names):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing


def test_metric_and_workflow_functions_are_named_with_their_modules() -> None:
    section = " ".join(api_section().split())
    for where in (
        "poisonlab.metrics.attack",
        "poisonlab.train.predict",
        "poisonlab.metrics.collision",
        "poisonlab.metrics.detection",
        "poisonlab.workflows.backdoor_eval.measure_backdoor",
        "poisonlab.workflows.collision_eval",
    ):
        assert f"`{where}" in section
    for module, names in {
        "poisonlab.metrics.attack": ("clean_accuracy", "attack_success_rate"),
        "poisonlab.metrics.collision": ("success_rate",),
        "poisonlab.metrics.detection": ("evaluate_detection", "auroc", "roc_points"),
        "poisonlab.workflows.collision_eval": ("evaluate_transfer", "evaluate_end_to_end"),
    }.items():
        for name in names:
            assert callable(resolve(f"{module}.{name}"))


def test_the_scan_result_attributes_it_names_exist() -> None:
    """The scan bullet names what its result holds (``verdict``, ``decision.poisoned_classes``,
    ``outcomes``, ``clean()``): each is an attribute of ScanResult or of its decision."""
    import dataclasses

    from poisonlab.defenses.fusion import CombinedDecision
    from poisonlab.scan import ScanResult

    section = " ".join(api_section().split())
    bullet = section.split("`poisonlab.scan.scan(", 1)[1].split("`poisonlab.scan.write_scan", 1)[0]
    said = re.search(r"the result's (.*?)\), and", bullet)
    assert said is not None
    named = re.findall(r"`([\w.]+)(?:\(\))?`", said.group(1))
    assert "verdict" in named and "clean" in named
    fields = {f.name for f in dataclasses.fields(ScanResult)}
    decision = {f.name for f in dataclasses.fields(CombinedDecision)}
    for name in named:
        first, _, rest = name.partition(".")
        assert first in fields or hasattr(ScanResult, first), name
        assert not rest or (first == "decision" and rest in decision), name


@pytest.mark.parametrize("package", ["poisonlab.data", "poisonlab.models", "poisonlab.train"])
def test_the_calls_a_package_bullet_shows_are_exported_there(package: str) -> None:
    """``from poisonlab.data import prepare_splits`` works for every ``name(...)`` the bullet of
    ``poisonlab.data`` (models, train) shows: the natural import, no private module."""
    section = api_section()
    bullet = section.split(f"- `{package}`: ", 1)[1].split("\n- ", 1)[0]
    calls = re.findall(r"`([A-Za-z_]\w*)\(", bullet)
    assert calls
    module = importlib.import_module(package)
    assert [name for name in calls if name not in getattr(module, "__all__", [])] == []


def test_a_saved_poisoned_set_reads_back_as_the_bullet_says(tmp_path: Path) -> None:
    """``save(path)``, then ``PoisonedDataset.load(path)`` for the whole set and
    ``load_dataset(path)`` for its data: what a Python user does with `poisonlab attack`'s file."""
    import torch

    from poisonlab.attacks import PoisonedDataset, build_attack
    from poisonlab.data import load_dataset
    from tests.conftest import blobs_dataset

    bullet = " ".join(api_section().split()).split("- `poisonlab.attacks`: ", 1)[1]
    assert "its `save(path)` writes the `poisoned.npz`" in bullet
    assert "`PoisonedDataset.load(path)` reads it back" in bullet
    assert "`load_dataset(path)` reads its data alone" in bullet
    poisoned = build_attack("badnets", count=6).poison(
        blobs_dataset(n_per_class=20, seed=0), generator=torch.Generator().manual_seed(0)
    )
    path = poisoned.save(tmp_path / "poisoned.npz")
    loaded = PoisonedDataset.load(path)
    assert torch.equal(loaded.is_poison, poisoned.is_poison)
    assert torch.equal(loaded.dataset.images, poisoned.dataset.images)
    data = load_dataset(path)
    assert torch.equal(data.labels, poisoned.dataset.labels)
    assert list(data.ids) == list(poisoned.dataset.ids)
