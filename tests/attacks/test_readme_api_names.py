"""README's "Python API" names resolve where it says they live (it once listed clean_accuracy,
predict and measure_backdoor under packages that do not export them: an ImportError on copy)."""

from __future__ import annotations

import re
from pathlib import Path

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
