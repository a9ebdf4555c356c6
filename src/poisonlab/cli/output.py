"""Output folders that change only when a command succeeds.

A command that writes an output folder (``--out``) writes into a hidden temporary folder beside
it, ``.NAME.XXXX.partial``; only when every file is written is that folder renamed to ``--out``.
With ``--force`` the earlier folder is moved aside at that moment and deleted after the swap. So:

* a command that fails or is interrupted leaves ``--out`` exactly as it was: an earlier result
  survives a failed ``--force``, and a failed first run leaves no (empty) folder behind, nor the
  parent folders it had to create;
* ``--force`` replaces only an earlier result of the same command: a folder holding any other
  file (another command's too) is refused before any work, naming the files (each command lists
  the names it writes).

Nothing here imports torch.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from poisonlab.errors import ConfigError

PARTIAL = ".partial"
"""Suffix of the temporary folder a command writes into (hidden, beside ``--out``)."""


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output_dir(path: Path, *, force: bool, owned: Collection[str]) -> None:
    """Refuse ``path`` now, before any work, if the command may not write it.

    A missing or empty folder is fine; a non-empty one needs ``force``, and even then every
    entry in it must be one of ``owned`` (the files and folders the command writes).
    """
    if path.is_symlink():  # the swap would replace the link, not the folder it points to
        raise ConfigError(f"output {path} is a symbolic link; give the folder it points to")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output {path} exists and is not a folder")
    if not path.exists():
        return
    entries = sorted(entry.name for entry in path.iterdir())
    if not entries:
        return
    if not force:
        raise ConfigError(f"output folder {path} already exists; pass --force to replace it")
    foreign = [name for name in entries if name not in owned]
    if foreign:
        raise ConfigError(
            f"output folder {path} holds files this command does not write "
            f"({_listing(foreign)}); --force replaces only an earlier result of this command: "
            "move those files or choose another --out"
        )


@dataclass
class OutputFolder:
    """Where a command writes (``work``) and where the results end up (``target``)."""

    target: Path
    work: Path
    replaces: bool
    """True when ``target`` already held results (they are replaced on success)."""

    def kept(self) -> str:
        """What a failed or interrupted command left, for its last message."""
        if self.replaces:
            return f"the earlier results in {self.target} are unchanged"
        return f"nothing was written to {self.target}"


def _create_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the created ones, outermost first."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {folder}: {exc.strerror}") from None
    return missing[::-1]


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return


def _swap(work: Path, target: Path) -> None:
    """Move ``work`` to ``target``; an existing ``target`` is moved aside first, then deleted."""
    if not target.exists():
        os.replace(work, target)
        return
    aside = work.with_name(work.name[: -len(PARTIAL)] + ".old")
    os.replace(target, aside)
    try:
        os.replace(work, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside)


@contextmanager
def output_folder(
    path: Path,
    *,
    force: bool,
    owned: Collection[str],
    interrupt_message: str = "",
) -> Iterator[OutputFolder]:
    """Yield an :class:`OutputFolder` to write into; swap it in as ``path`` on success.

    On an exception the temporary folder (and any parent folder created for it) is removed and
    the exception propagates; on Ctrl-C (KeyboardInterrupt) one yellow line says what was kept
    (plus ``interrupt_message``), then exit 130.
    """
    path = path.expanduser()
    check_output_dir(path, force=force, owned=owned)
    parent = path.absolute().parent
    created = _create_parents(parent)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=parent))
    except OSError as exc:
        _remove_if_empty(created)
        raise ConfigError(f"cannot write in {parent}: {exc.strerror}") from None
    folder = OutputFolder(path, work, replaces=path.is_dir() and any(path.iterdir()))
    try:
        yield folder
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        _remove_if_empty(created)
        if isinstance(exc, KeyboardInterrupt):
            from poisonlab.cli.console import interrupted

            raise interrupted(f"{folder.kept()}{interrupt_message}") from None
        raise
    try:  # again: a file may have been put there while the command ran
        check_output_dir(path, force=force, owned=owned)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; the new results are in {work}") from None
    _swap(work, path)
