"""The content-addressed cache: one creation per key, atomic entries, racing creators."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from poisonlab.experiments.cache import KEY_FILE, DirectoryCache


def test_create_once_then_reuse(tmp_path):
    cache = DirectoryCache(tmp_path / "cache")
    calls = []

    def create(folder: Path) -> None:
        calls.append(folder)
        (folder / "model.txt").write_text("weights")

    first = cache.get_or_create("model", {"arch": "cnn-small", "seed": 1}, create)
    second = cache.get_or_create("model", {"seed": 1, "arch": "cnn-small"}, create)
    other = cache.get_or_create("model", {"arch": "cnn-small", "seed": 2}, create)
    assert first == second == cache.path("model", {"arch": "cnn-small", "seed": 1})
    assert other != first and len(calls) == 2
    assert (first / "model.txt").read_text() == "weights" and (first / KEY_FILE).exists()
    assert first.parent == tmp_path / "cache" / "model"
    assert calls[0] != first  # created in a temporary folder, renamed into place


def test_failed_creation_leaves_nothing(tmp_path):
    cache = DirectoryCache(tmp_path / "cache")

    def create(folder: Path) -> None:
        (folder / "half.txt").write_text("partial")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get_or_create("model", "k", create)
    assert not cache.path("model", "k").exists()
    assert [p.name for p in (tmp_path / "cache" / "model").iterdir() if p.is_dir()] == []
    with pytest.raises(ValueError, match="cache kind"):
        cache.path("../escape", "k")


def _race(root: str, lock: bool, barrier, log: str) -> None:
    """Create the same entry as the other processes, as close to simultaneously as possible."""
    cache = DirectoryCache(root, lock=lock)

    def create(folder: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # everyone is inside create at the same time (without the lock)
        (folder / "owner.txt").write_text(str(os.getpid()))

    barrier.wait()
    path = cache.get_or_create("model", "shared", create)
    assert (path / "owner.txt").exists()
    with open(log + ".paths", "a") as handle:
        handle.write(f"{path}\n")


@pytest.mark.parametrize("lock", [False, True], ids=["rename-only", "locked"])
def test_concurrent_creators(tmp_path, lock):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    log = str(tmp_path / "creations")
    processes = [
        context.Process(target=_race, args=(str(tmp_path / "cache"), lock, barrier, log))
        for _ in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    creators = Path(log).read_text().split()
    assert len(creators) == (1 if lock else 3)  # without the lock all three computed it
    paths = set(Path(log + ".paths").read_text().split())
    assert len(paths) == 1  # ...but everyone got the one entry
    entries = [p for p in (tmp_path / "cache" / "model").iterdir() if p.is_dir()]
    assert [p.name for p in entries] == [Path(next(iter(paths))).name]  # losers discarded copies
    assert (entries[0] / "owner.txt").read_text() in creators


def test_clean_temporary_removes_only_dead_owners(tmp_path):
    cache = DirectoryCache(tmp_path / "cache")
    cache.get_or_create("model", "k", lambda folder: None)
    kind = tmp_path / "cache" / "model"
    host = __import__("socket").gethostname().replace("-", "_")
    context = multiprocessing.get_context("spawn")
    gone = context.Process(target=time.sleep, args=(0,))
    gone.start()
    gone.join()
    dead = kind / f".tmp-abc-{host}-{gone.pid}-deadbeef"
    live = kind / f".tmp-abc-{host}-{os.getpid()}-cafebabe"
    dead.mkdir()
    live.mkdir()
    assert cache.clean_temporary() == 1
    assert not dead.exists() and live.exists() and cache.path("model", "k").exists()
