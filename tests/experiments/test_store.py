"""The SQLite results store: round trip, grid sync, schema version, concurrent writers."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3

import pytest

from poisonlab.errors import ConfigError
from poisonlab.experiments.store import (
    PACKAGES,
    SCHEMA_VERSION,
    NewCell,
    Store,
    package_versions,
)


def new_cells(n: int, prefix: str = "k") -> list[NewCell]:
    return [
        NewCell(f"{prefix}{i}", "test-sleep", f"x={i}", {"task": {"x": i}}, {"task.x": i})
        for i in range(n)
    ]


def test_round_trip(tmp_path):
    with Store.in_runs(tmp_path) as store:
        store.record_experiment(
            "exp", kind="test-sleep", config_hash="h1", config={"a": [1]}, paper_table="t1"
        )
        store.sync_grid("exp", "h1", new_cells(3))
        store.mark_running("exp", "k0", config_hash="h1", started=100.0)
        store.finish(
            "exp",
            "k0",
            status="done",
            metrics={"value": 0.5, "n": 3, "auroc": math.nan},
            started=100.0,
            finished=102.5,
            seconds=2.5,
            versions=package_versions(),
            hostname="node1",
        )
        store.mark_running("exp", "k1", config_hash="h1")
        store.finish("exp", "k1", status="failed", error="ValueError: bad\nTraceback ...")
        assert store.experiments() == ["exp"]
        record = store.experiment("exp")
        assert record is not None and record.config == {"a": [1]} and record.paper_table == "t1"
    with Store(tmp_path / "results.sqlite") as store:  # reopened: everything was committed
        done, failed, pending = store.cells("exp")
        assert (done.status, failed.status, pending.status) == ("done", "failed", "pending")
        assert done.metrics["value"] == 0.5 and done.metrics["n"] == 3
        assert math.isnan(done.metrics["auroc"])
        assert (done.started, done.finished, done.seconds, done.attempts) == (100.0, 102.5, 2.5, 1)
        assert done.params == {"task": {"x": 0}} and done.axes == {"task.x": 0}
        assert done.hostname == "node1" and set(PACKAGES) | {"python"} == set(done.versions)
        assert failed.error_line == "ValueError: bad" and failed.metrics == {}
        assert pending.attempts == 0 and pending.started is None
        assert [c.key for c in store.cells(status="failed")] == ["k1"]
        assert store.cell("exp", "k2") == pending and store.cell("exp", "zz") is None
        assert store.counts("exp") == {"pending": 1, "running": 0, "done": 1, "failed": 1}
        with pytest.raises(ConfigError, match="finished"):
            store.cells(status="finished")


def test_sync_grid_keeps_results_and_flags_cells_left_out(tmp_path):
    with Store.in_runs(tmp_path) as store:
        store.sync_grid("exp", "h1", new_cells(3))
        store.mark_running("exp", "k1", config_hash="h1")
        store.finish("exp", "k1", status="done", metrics={"v": 1})
        store.sync_grid("exp", "h2", [new_cells(3)[1], *new_cells(1, prefix="new")])
        current = store.cells("exp")
        assert [(c.key, c.position, c.status) for c in current] == [
            ("k1", 0, "done"),
            ("new0", 1, "pending"),
        ]
        assert current[0].metrics == {"v": 1} and current[0].config_hash == "h1"
        everything = store.cells("exp", in_grid=False)
        assert {c.key for c in everything} == {"k0", "k1", "k2", "new0"}
        assert store.reset_running("exp") == 0


def test_reset_running(tmp_path):
    with Store.in_runs(tmp_path) as store:
        store.sync_grid("exp", "h", new_cells(3))
        for key in ("k0", "k1", "k2"):
            store.mark_running("exp", key, config_hash="h")
        assert store.reset_running("exp", ["k0"]) == 1
        assert store.reset_running("exp") == 2
        assert {c.status for c in store.cells("exp")} == {"pending"}


def test_newer_schema_is_refused(tmp_path):
    Store.in_runs(tmp_path).close()
    with sqlite3.connect(tmp_path / "results.sqlite") as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer"):
        Store.in_runs(tmp_path)


def test_a_file_that_is_not_a_store_is_refused_by_name(tmp_path):
    """Issue: `poisonlab table photo.png` (or a damaged results.sqlite) ended in a traceback
    ("sqlite3.DatabaseError: file is not a database"); a folder named results.sqlite too."""
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ConfigError, match=r"photo\.png is not a poisonlab results store"):
        Store(png)
    assert png.read_bytes()[:4] == b"\x89PNG"  # left as it was
    (tmp_path / "runs" / "results.sqlite").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"results\.sqlite is a folder"):
        Store.in_runs(tmp_path / "runs")


def test_wal_mode(tmp_path):
    with Store.in_runs(tmp_path) as store:
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def _writer(path: str, worker: int, n: int) -> None:
    """A separate process: open the store and run n cells through running -> done."""
    with Store(path, timeout=30) as store:
        keys = [f"w{worker}-{i}" for i in range(n)]
        for key in keys:
            store.sync_grid(f"exp{worker}", "h", [NewCell(k, "t", "", {}, {}) for k in keys])
            store.mark_running(f"exp{worker}", key, config_hash="h")
            store.finish(f"exp{worker}", key, status="done", metrics={"worker": worker})


def test_concurrent_writers(tmp_path):
    path = str(tmp_path / "results.sqlite")
    Store(path).close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(path, w, 15)) for w in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    with Store(path) as store:
        cells = store.cells(status="done")
        assert len(cells) == 45
        assert {c.metrics["worker"] for c in cells} == {0, 1, 2}
        assert all(c.attempts == 1 for c in cells)
