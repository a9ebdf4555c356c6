"""The thread policy (poisonlab.runtime): counts, their sources, bad values, the wait policy."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys

import pytest
import torch

from poisonlab import runtime
from poisonlab.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_policy(monkeypatch):
    """Each test starts from the session's settings and leaves them as they were."""
    saved = dict(os.environ)
    monkeypatch.setattr(runtime, "_warned", set())
    yield
    os.environ.clear()
    os.environ.update(saved)
    runtime.use_threads()


@pytest.mark.parametrize("bad", [0, -1, "-3", "two", "1.5", 2.0, True, ""])
def test_bad_counts_are_one_line_errors_naming_their_origin(bad):
    with pytest.raises(ConfigError) as info:
        runtime.parse_threads(bad)
    message = str(info.value)
    assert message.startswith(f"`threads` {str(bad).strip()}:")  # the CLI shows --threads
    assert "\n" not in message and f"1 to {runtime.cpu_count()}" in message


def test_environment_variable_errors_name_the_variable(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "0")
    with pytest.raises(ConfigError, match=r"^POISONLAB_THREADS=0: expected a whole number"):
        runtime.use_threads()


def test_more_than_the_cores_is_clamped_with_one_warning(caplog):
    cores = runtime.cpu_count()
    with caplog.at_level(logging.WARNING, logger="poisonlab.runtime"):
        assert runtime.parse_threads(cores + 5) == cores
        assert runtime.parse_threads(str(cores + 5)) == cores
    warnings = [r for r in caplog.records if "more than this machine" in r.getMessage()]
    assert len(warnings) == 1
    assert f"`threads` {cores + 5}" in warnings[0].getMessage()


def test_explicit_count_wins_over_the_variables(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    monkeypatch.setitem(runtime._user_counts, "OMP_NUM_THREADS", "1")
    assert runtime.requested_threads(1) == (1, "threads")
    assert runtime.requested_threads(None) == (1, runtime.THREADS_ENV)
    monkeypatch.delenv(runtime.THREADS_ENV)
    assert runtime.requested_threads(None) == (1, "OMP_NUM_THREADS")
    monkeypatch.delitem(runtime._user_counts, "OMP_NUM_THREADS")
    assert runtime.requested_threads(None) == (None, "auto")


def test_the_count_poisonlab_exported_is_not_taken_for_the_users(monkeypatch):
    """use_threads exports OMP_NUM_THREADS for later libraries; it must not pin later choices."""
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtime, "_user_counts", {})
    runtime.use_threads(1)
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert runtime.requested_threads(None) == (None, "auto")


def test_automatic_choice_follows_the_image_size():
    cores = runtime.cpu_count()
    assert runtime.auto_threads((1, 8, 8)) == 1
    assert runtime.auto_threads((1, 16, 16)) == 1
    assert runtime.auto_threads((1, 28, 28)) == cores
    assert runtime.auto_threads((3, 32, 32)) == cores
    assert runtime.auto_threads(None) == cores


def test_an_image_size_without_channels_decides_only_when_gray_and_colour_agree():
    """1 or 3 channels: (H, W) when both get the same count from auto_threads, else unknown."""
    cores = runtime.cpu_count()
    for height, width, threads in ((8, 8, 1), (9, 9, 1), (17, 16, cores), (32, 32, cores)):
        shape = runtime.sized_image_shape(height, width)
        assert shape == (height, width) and runtime.auto_threads(shape) == threads
        for channels in (1, 3):  # the choice is the one for either kind of image
            assert runtime.auto_threads((channels, height, width)) == threads
    for height, width in ((10, 9), (12, 12), (16, 16)):  # small in gray, large in colour
        assert runtime.sized_image_shape(height, width) is None


def test_use_threads_applies_and_records_the_choice(monkeypatch):
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtime, "_user_counts", {})
    settings = runtime.use_threads(image_shape=(1, 8, 8))
    assert settings.threads == 1 and torch.get_num_threads() == 1
    assert settings.source == "auto (1×8×8)"
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert runtime.current() == settings
    assert runtime.record() == settings.to_dict()
    settings = runtime.use_threads(1, source="executor share of the cores")
    assert settings.source == "executor share of the cores"


def test_a_python_call_is_recorded_as_that_call_not_as_the_cli_option(monkeypatch):
    """A library user's ``use_threads(1)`` never typed --threads; summary.json says what they did."""
    monkeypatch.setenv(runtime.THREADS_ENV, "1")
    settings = runtime.use_threads(1)
    assert settings.source == "use_threads(threads=1)"
    assert runtime.record()["source"] == "use_threads(threads=1)"
    # a source names an explicit count only: the environment's count keeps its own
    assert runtime.use_threads(None, source="--threads").source == runtime.THREADS_ENV


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in runtime._WAIT_VARS}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_importing_poisonlab_first_makes_openmp_wait_passively():
    """libgomp reports what it read at load (OMP_DISPLAY_ENV): PASSIVE, set by poisonlab."""
    done = _python(
        "import poisonlab, torch; torch.ones(2).sum();"
        "print(poisonlab.runtime.record()['wait_policy_source'])",
        OMP_DISPLAY_ENV="TRUE",
    )
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in done.stderr
    assert done.stdout.strip() == "poisonlab"


def test_a_users_wait_policy_is_kept_and_a_late_import_is_reported():
    done = _python(
        "import os, poisonlab; print(os.environ['OMP_WAIT_POLICY']);"
        "print(poisonlab.runtime.record()['wait_policy_source'])",
        OMP_WAIT_POLICY="ACTIVE",
    )
    assert done.stdout.split() == ["ACTIVE", "user"]
    done = _python(
        "import os, torch, poisonlab; print(os.environ.get('OMP_WAIT_POLICY'));"
        "print(poisonlab.runtime.describe())"
    )
    first, second = done.stdout.strip().splitlines()
    assert first == "None" and "torch was loaded before poisonlab" in second


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_freed_memory_is_kept_unless_the_user_tuned_malloc():
    """Rule 4: importing poisonlab raises glibc's trim threshold (freed heap memory stays for the
    next training step instead of being faulted in again); a user's MALLOC_* setting wins."""
    code = (
        "import resource, poisonlab, torch\n"
        "print(poisonlab.runtime.keep_freed_memory())\n"
        "def step():\n"  # 3 x 16 MB, allocated, written and freed, like a training step's
        "    y = [torch.ones(4 << 20) for _ in range(3)]\n"
        "for _ in range(10):\n"  # the heap settles
        "    step()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    pages = 10 * 3 * (16 << 20) // 4096  # faults if every step's pages came fresh from the OS
    kept, faults = _python(code).stdout.split("\n")[:2]
    assert kept.startswith("freed memory kept") and int(faults) < pages // 20
    user, faults = _python(code, MALLOC_TRIM_THRESHOLD_="131072").stdout.split("\n")[:2]
    assert user == "user's malloc settings"
    assert int(faults) > pages // 2  # glibc's own behaviour: the pages are faulted in again
