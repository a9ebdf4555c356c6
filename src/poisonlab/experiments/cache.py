"""Content-addressed cache for expensive intermediate results (trained models, representations).

An entry lives in ``RUNS/cache/<kind>/<hash>/`` where ``hash`` is :func:`stable_hash` of the key
(any JSON-able value: the parameters that determine the object). Cells that need the same model
ask for the same key and get the same folder, so the model is trained once per runs folder.

Creation is atomic: ``create`` fills a temporary sibling folder that is renamed into place only
after it returned, so an entry that exists is complete, and a killed run leaves at most a
``.tmp-*`` folder that is never trusted (and is removed by :meth:`DirectoryCache.clean_temporary`
once its process is gone). When two processes create the same entry at once, the first rename
wins and the loser discards its copy. On POSIX an advisory lock per entry also makes the second
process wait for the first instead of computing the same thing twice; the rename, not the lock,
is what guarantees correctness (the lock may be ineffective on some network file systems).

Limits: entries are never evicted; delete ``RUNS/cache`` to reclaim space. The key must capture
everything the object depends on, including code changes that alter it (add a version tag).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from poisonlab.experiments.tasks_base import stable_hash

try:  # advisory locks are an optimisation; Windows has no fcntl
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
KEY_FILE = ".key.json"


class DirectoryCache:
    """The :class:`poisonlab.experiments.tasks_base.Cache` protocol on a local or shared folder.

    Parameters
    ----------
    root : str or Path
        The cache folder, usually ``RUNS/cache``.
    lock : bool
        Serialise creators of the same entry with a file lock (so only one computes it).
    """

    def __init__(self, root: str | Path, *, lock: bool = True) -> None:
        self.root = Path(root)
        self.lock = lock and fcntl is not None

    def path(self, kind: str, key: Any) -> Path:
        """Folder of the entry (kind, key); it may not exist yet."""
        if not _KIND.match(kind):
            raise ValueError(f"cache kind {kind!r} must be letters, digits, '.', '_' or '-'")
        return self.root / kind / stable_hash(key, length=24)

    def get_or_create(self, kind: str, key: Any, create: Callable[[Path], None]) -> Path:
        """The entry's folder, calling ``create(folder)`` on a temporary folder first if missing.

        Raises whatever ``create`` raises (its temporary folder is removed; no entry appears).
        """
        final = self.path(kind, key)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(final):
            if final.is_dir():  # another process made it while we waited for the lock
                return final
            temporary = final.parent / f".tmp-{final.name}-{_owner()}-{uuid.uuid4().hex[:8]}"
            temporary.mkdir()
            try:
                (temporary / KEY_FILE).write_text(json.dumps(key, sort_keys=True, default=str))
                create(temporary)
                os.rename(temporary, final)
            except OSError:
                shutil.rmtree(temporary, ignore_errors=True)
                if final.is_dir():  # lost the race: the other copy is equivalent
                    return final
                raise
            except BaseException:
                shutil.rmtree(temporary, ignore_errors=True)
                raise
        return final

    @contextlib.contextmanager
    def _locked(self, final: Path) -> Iterator[None]:
        """Hold an exclusive advisory lock on ``<entry>.lock`` (a no-op without locking)."""
        if not self.lock:
            yield
            return
        with open(final.parent / f"{final.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def clean_temporary(self) -> int:
        """Remove temporary folders left by dead processes of this host; the number removed."""
        host = socket.gethostname()
        removed = 0
        for folder in self.root.glob("*/.tmp-*"):
            owner = folder.name.split("-")
            try:
                pid, folder_host = int(owner[-2]), "-".join(owner[2:-2])
            except (ValueError, IndexError):
                continue
            if folder_host == host.replace("-", "_") and not _alive(pid):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


def _owner() -> str:
    """``<host>-<pid>`` for temporary names (dashes in the host name become underscores)."""
    return f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
