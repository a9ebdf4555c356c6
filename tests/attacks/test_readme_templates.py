"""README's "Adding an attack or a defense" templates run as written: each defines a registered,
validated class (they once used POSITIVE_INT without importing it, a NameError on copy-paste)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poisonlab.attacks import ATTACKS, build_attack
from poisonlab.defenses import DETECTORS, build_detector
from poisonlab.errors import ConfigError

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks(title: str) -> list[str]:
    """The ```python blocks of README's section ``## title``."""
    text = README.read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def scratch_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by the templates go into copies, so no other test sees them."""
    build_attack("badnets")  # fill the registries before copying them
    build_detector("spectral-signatures")
    monkeypatch.setattr(ATTACKS, "_items", dict(ATTACKS._items))
    monkeypatch.setattr(DETECTORS, "_items", dict(DETECTORS._items))


def test_templates_define_validated_classes(scratch_registries: None) -> None:
    attack_code, defense_code = section_blocks("Adding an attack or a defense")
    exec(compile(attack_code, "README attack template", "exec"), {})
    exec(compile(defense_code, "README defense template", "exec"), {})

    attack = build_attack("my-attack", rate=0.25)
    assert attack.params() == {"rate": 0.25}
    with pytest.raises(ConfigError, match=r"my-attack.*rate"):
        build_attack("my-attack", rate=1.5)

    detector = build_detector("my-defense", k=3)
    assert detector.params()["k"] == 3
    assert DETECTORS.get("my-defense").per_class
    with pytest.raises(ConfigError, match=r"my-defense.*k"):
        build_detector("my-defense", k=0)
