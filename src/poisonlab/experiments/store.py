"""The results store: one SQLite file per runs folder (``RUNS/results.sqlite``), one row per cell.

Why SQLite: it is in the standard library, a single file, transactional (a cell's metrics are
committed only when it finishes, so a killed run never leaves half a result), and readable by
several processes at once. The database runs in WAL mode with a busy timeout, so drivers of
different experiments, worker processes and the ``table`` / ``report`` readers can share it.

Schema (version 1; ``schema_version`` holds the number, a newer file is refused)::

    schema_version(version INTEGER)
    experiments(
        name TEXT PRIMARY KEY,       -- config name, also the folder RUNS/<name>/
        kind TEXT,                   -- task kind
        config_hash TEXT,            -- ExperimentConfig.hash of the last run
        config TEXT,                 -- JSON: the resolved config of the last run
        description TEXT,
        paper_table TEXT,            -- [paper] table (e.g. "seed002-table1") or NULL
        updated REAL)                -- unix time of the last run
    cells(
        experiment TEXT, key TEXT,   -- PRIMARY KEY (experiment, key); key = CellSpec.key
        position INTEGER,            -- index in the grid's deterministic order
        in_grid INTEGER,             -- 1 if the cell belongs to the experiment's latest grid
        config_hash TEXT,            -- config of the run that last (re)started the cell
        kind TEXT,
        description TEXT,            -- short "rate=0.1 seed=0 r0" text of the varying axes
        params TEXT,                 -- JSON: CellSpec.params
        axes TEXT,                   -- JSON: {"attack.rate": 0.1, "seed": 0, "repeat": 0, ...}
        status TEXT,                 -- pending | running | done | failed
        metrics TEXT,                -- JSON {name: number} (NaN allowed) once done, else NULL
        started REAL, finished REAL, -- unix times of the last attempt
        seconds REAL,                -- wall time of the last attempt
        error TEXT,                  -- "Type: message" then a short traceback, when failed
        attempts INTEGER,            -- executions started (an interrupted one counts)
        versions TEXT,               -- JSON: poisonlab, torch, numpy, ... and python versions
        hostname TEXT)               -- machine that ran the last attempt

Cells of older grids (after a config edit) stay, with ``in_grid = 0``: their results are not
thrown away, and :meth:`Store.cells` leaves them out unless asked.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.versions import PACKAGES as PACKAGES  # re-exported: the store's record
from poisonlab.versions import package_versions as package_versions

SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
FILENAME = "results.sqlite"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    config TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    paper_table TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    experiment TEXT NOT NULL,
    key TEXT NOT NULL,
    position INTEGER NOT NULL,
    in_grid INTEGER NOT NULL DEFAULT 1,
    config_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL,
    axes TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {STATUSES!r}),
    metrics TEXT,
    started REAL,
    finished REAL,
    seconds REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    versions TEXT,
    hostname TEXT,
    PRIMARY KEY (experiment, key)
);
CREATE INDEX IF NOT EXISTS cells_by_status ON cells (experiment, status);
"""


@dataclass(frozen=True)
class CellRecord:
    """One row of ``cells``, with the JSON columns decoded."""

    experiment: str
    key: str
    position: int
    in_grid: bool
    config_hash: str
    kind: str
    description: str
    params: dict[str, Any]
    axes: dict[str, Any]
    status: str
    metrics: dict[str, float | int]
    started: float | None
    finished: float | None
    seconds: float | None
    error: str | None
    attempts: int
    versions: dict[str, str | None]
    hostname: str | None

    @property
    def error_line(self) -> str:
        """The first line of the error (``Type: message``), or an empty string."""
        return (self.error or "").split("\n", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True)
class ExperimentRecord:
    """One row of ``experiments``: the last resolved config of an experiment."""

    name: str
    kind: str
    config_hash: str
    config: dict[str, Any]
    description: str
    paper_table: str | None
    updated: float


@dataclass(frozen=True)
class NewCell:
    """What :meth:`Store.sync_grid` needs to know about a grid cell."""

    key: str
    kind: str
    description: str
    params: Mapping[str, Any]
    axes: Mapping[str, Any]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Store:
    """Read and write the results database at ``path`` (created with its schema when missing).

    Parameters
    ----------
    path : str or Path
        The SQLite file, usually ``RUNS/results.sqlite`` (see :meth:`in_runs`).
    timeout : float
        Seconds a writer waits for another process's transaction before giving up.
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise ConfigError(
                f"{self.path} is a folder; expected the results store (an SQLite file)"
            )
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:  # another kind of file in its place
            self._db.close()
            raise ConfigError(
                f"{self.path} is not a poisonlab results store (an SQLite file): {exc}"
            ) from None
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path} has schema version {row[0]}, newer than this poisonlab "
                    f"({SCHEMA_VERSION}); upgrade poisonlab to read it"
                )

    @classmethod
    def in_runs(cls, runs_dir: str | Path, **kwargs: Any) -> Store:
        """The store of a runs folder: ``RUNS/results.sqlite``."""
        return cls(Path(runs_dir) / FILENAME, **kwargs)

    def close(self) -> None:
        """Close the connection (the file stays consistent whether or not this is called)."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (no upgrade deadlocks)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------

    def record_experiment(
        self,
        name: str,
        *,
        kind: str,
        config_hash: str,
        config: Mapping[str, Any],
        description: str = "",
        paper_table: str | None = None,
    ) -> None:
        """Insert or replace the experiment's row with its latest resolved config."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, kind, config_hash, _dumps(config), description, paper_table, time.time()),
            )

    def sync_grid(self, experiment: str, config_hash: str, cells: Sequence[NewCell]) -> None:
        """Add the grid's new cells as pending; renumber known ones; flag the rest not in grid.

        Status, metrics and timings of known cells are left alone: that is what makes a re-run
        skip finished cells.
        """
        with self._write() as db:
            db.execute("UPDATE cells SET in_grid = 0 WHERE experiment = ?", (experiment,))
            for position, cell in enumerate(cells):
                db.execute(
                    "INSERT INTO cells (experiment, key, position, in_grid, config_hash, kind, "
                    "description, params, axes) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (experiment, key) DO UPDATE SET position = excluded.position, "
                    "in_grid = 1, description = excluded.description, axes = excluded.axes",
                    (
                        experiment,
                        cell.key,
                        position,
                        config_hash,
                        cell.kind,
                        cell.description,
                        _dumps(cell.params),
                        _dumps(cell.axes),
                    ),
                )

    def mark_running(
        self, experiment: str, key: str, *, config_hash: str, started: float | None = None
    ) -> None:
        """The cell was handed to an executor: status running, one more attempt, old result gone."""
        with self._write() as db:
            db.execute(
                "UPDATE cells SET status = 'running', attempts = attempts + 1, config_hash = ?, "
                "started = ?, finished = NULL, seconds = NULL, metrics = NULL, error = NULL "
                "WHERE experiment = ? AND key = ?",
                (config_hash, started if started is not None else time.time(), experiment, key),
            )

    def finish(
        self,
        experiment: str,
        key: str,
        *,
        status: str,
        metrics: Mapping[str, float | int] | None = None,
        error: str | None = None,
        started: float | None = None,
        finished: float | None = None,
        seconds: float | None = None,
        versions: Mapping[str, str | None] | None = None,
        hostname: str | None = None,
    ) -> None:
        """Commit a finished attempt (status done or failed) with its metrics or error."""
        if status not in ("done", "failed"):
            raise ValueError(f"finish status must be done or failed, got {status!r}")
        with self._write() as db:
            db.execute(
                "UPDATE cells SET status = ?, metrics = ?, error = ?, "
                "started = COALESCE(?, started), finished = ?, seconds = ?, versions = ?, "
                "hostname = ? WHERE experiment = ? AND key = ?",
                (
                    status,
                    None if metrics is None else _dumps(dict(metrics)),
                    error,
                    started,
                    finished if finished is not None else time.time(),
                    seconds,
                    None if versions is None else _dumps(dict(versions)),
                    hostname,
                    experiment,
                    key,
                ),
            )

    def reset_running(self, experiment: str, keys: Iterable[str] | None = None) -> int:
        """Set running cells (all of the experiment's, or ``keys``) back to pending; the count."""
        with self._write() as db:
            if keys is None:
                cursor = db.execute(
                    "UPDATE cells SET status = 'pending', started = NULL "
                    "WHERE experiment = ? AND status = 'running'",
                    (experiment,),
                )
                return cursor.rowcount
            count = 0
            for key in keys:
                cursor = db.execute(
                    "UPDATE cells SET status = 'pending', started = NULL "
                    "WHERE experiment = ? AND key = ? AND status = 'running'",
                    (experiment, key),
                )
                count += cursor.rowcount
            return count

    # -- reading -----------------------------------------------------------------------------

    def cells(
        self, experiment: str | None = None, status: str | None = None, *, in_grid: bool = True
    ) -> list[CellRecord]:
        """Cells in grid order, filtered by experiment and status; ``in_grid=False`` adds old ones."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"unknown status {status!r}; choose one of: {', '.join(STATUSES)}")
        query = "SELECT * FROM cells WHERE 1"
        args: list[Any] = []
        if experiment is not None:
            query, args = query + " AND experiment = ?", [*args, experiment]
        if status is not None:
            query, args = query + " AND status = ?", [*args, status]
        if in_grid:
            query += " AND in_grid = 1"
        rows = self._db.execute(query + " ORDER BY experiment, in_grid DESC, position", args)
        return [_cell_record(row, rows.description) for row in rows.fetchall()]

    def cell(self, experiment: str, key: str) -> CellRecord | None:
        """One cell, or None."""
        rows = self._db.execute(
            "SELECT * FROM cells WHERE experiment = ? AND key = ?", (experiment, key)
        )
        row = rows.fetchone()
        return None if row is None else _cell_record(row, rows.description)

    def experiments(self) -> list[str]:
        """Names of the experiments in the store, sorted."""
        rows = self._db.execute("SELECT name FROM experiments ORDER BY name").fetchall()
        return [name for (name,) in rows]

    def experiment(self, name: str) -> ExperimentRecord | None:
        """The experiment's last recorded config, or None."""
        row = self._db.execute("SELECT * FROM experiments WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        name, kind, config_hash, config, description, paper_table, updated = row
        return ExperimentRecord(
            name, kind, config_hash, json.loads(config), description, paper_table, updated
        )

    def counts(self, experiment: str) -> dict[str, int]:
        """Number of the experiment's current cells per status (every status present)."""
        rows = self._db.execute(
            "SELECT status, COUNT(*) FROM cells WHERE experiment = ? AND in_grid = 1 "
            "GROUP BY status",
            (experiment,),
        ).fetchall()
        return {status: 0 for status in STATUSES} | dict(rows)


def _cell_record(row: Sequence[Any], description: Sequence[Sequence[Any]]) -> CellRecord:
    """Decode a ``SELECT *`` row of ``cells``."""
    data = dict(zip([column[0] for column in description], row, strict=True))
    for column in ("params", "axes", "metrics", "versions"):
        data[column] = json.loads(data[column]) if data[column] is not None else {}
    data["in_grid"] = bool(data["in_grid"])
    return CellRecord(**data)
