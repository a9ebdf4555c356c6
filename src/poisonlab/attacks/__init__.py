"""Attacks that poison a training set and return the ground truth with it."""

from __future__ import annotations

from poisonlab.attacks.base import ATTACKS, Attack, PoisonedDataset, register_attack
from poisonlab.validation import check_keywords

__all__ = [
    "ATTACKS",
    "Attack",
    "PoisonedDataset",
    "attack_names",
    "build_attack",
    "register_attack",
]


def _load_attacks() -> None:
    """Import the attack modules so their decorators fill ATTACKS."""
    import importlib
    import pkgutil

    import poisonlab.attacks as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"poisonlab.attacks.{module.name}")


def attack_names() -> list[str]:
    """Registered attack names."""
    _load_attacks()
    return ATTACKS.names()


def build_attack(name: str, **params: object) -> Attack:
    """Instantiate the attack registered as ``name`` with keyword hyper-parameters.

    Raises
    ------
    ConfigError
        An unknown name or keyword (naming the accepted ones), or a value its constructor refuses.
    """
    _load_attacks()
    cls = ATTACKS.get(name)
    check_keywords(name, cls, params)
    return cls(**params)
