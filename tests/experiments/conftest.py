"""Registers the fake ``test-*`` tasks and gives the tests a config writer."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.experiments.fake_tasks  # noqa: F401  (registers test-sleep, test-fail, test-cache)


@pytest.fixture
def write_config(tmp_path):
    """``write_config(text, name="exp.toml") -> Path``: a TOML file in tmp_path."""

    def write(text: str, name: str = "exp.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
