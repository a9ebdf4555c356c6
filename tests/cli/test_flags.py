"""Library errors name Python parameters; the CLI shows them as its options."""

from __future__ import annotations

import logging

import pytest
import torch

from poisonlab.cli.flags import OptionNames, as_flags
from poisonlab.data.dataset import ImageDataset
from poisonlab.defenses import Evidence
from poisonlab.errors import ConfigError
from poisonlab.runtime import parse_threads


def test_backticked_parameters_become_options_and_other_words_stay() -> None:
    assert (
        as_flags("needs a clean held-out set (`holdout`)")
        == "needs a clean held-out set (--holdout)"
    )
    assert as_flags("`cpus_per_task` must be > 0") == "--cpus-per-task must be > 0"
    assert as_flags("pass `evaluate=False`") == "pass --no-eval"
    assert as_flags("`address` needs the ray `executor`") == "--address needs the ray --executor"
    assert as_flags("`overrides` expect section.key=value") == "--set expect section.key=value"
    assert as_flags("layer `body.fc1` and `rate`") == "layer `body.fc1` and `rate`"


def test_library_errors_speak_parameter_names() -> None:
    data = ImageDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), 2)
    evidence = Evidence(data, device="cpu")
    with pytest.raises(ConfigError) as held:
        evidence.dataset("holdout")
    with pytest.raises(ConfigError) as model:
        evidence.require_model()
    with pytest.raises(ConfigError) as threads:
        parse_threads(0)
    for exc, parameter in ((held, "holdout"), (model, "model"), (threads, "threads")):
        assert f"`{parameter}`" in str(exc.value) and "--" not in str(exc.value)
        assert f"--{parameter}" in as_flags(str(exc.value))


def test_warnings_are_shown_with_option_names() -> None:
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "%s is too many", ("`threads` 9",), None
    )
    assert OptionNames("%(message)s").format(record) == "--threads 9 is too many"
    assert record.getMessage() == "`threads` 9 is too many"  # the record itself is untouched
