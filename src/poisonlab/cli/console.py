"""One console for results (stdout), one for messages (stderr), and the user-error exit path."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from poisonlab import progress
from poisonlab.cli.flags import OptionNames, as_flags
from poisonlab.errors import PoisonlabError

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one red line on stderr and return the Exit to raise (no traceback).

    Parameters the library names in backticks are shown as the CLI's options (:mod:`.flags`).
    """
    err.print(f"[bold red]error:[/] {escape(as_flags(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def interrupted(kept: str = "") -> typer.Exit:
    """After Ctrl-C: one yellow line on stderr saying what was kept; return the Exit (130)."""
    detail = f": {kept}" if kept else ""
    err.print(f"[yellow]interrupted[/]{escape(detail)}", highlight=False, soft_wrap=True)
    return typer.Exit(130)


def _with_flags(handler: logging.Handler, fmt: str = "%(message)s") -> logging.Handler:
    handler.setFormatter(OptionNames(fmt))
    return handler


def _log_handler() -> logging.Handler:
    """Rich's level column on a terminal; elsewhere (a pipe, a file, CI) the same ``WARNING  ``
    prefix on a plain line, so a message is never wrapped at 80 columns in a log, as scan's and
    demo's tables and lines are not."""
    if err.is_terminal:
        return _with_flags(RichHandler(console=err, show_path=False, show_time=False))
    return _with_flags(logging.StreamHandler(err.file), "%(levelname)-8s %(message)s")


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    """Map --quiet / --verbose to log levels and switch progress on unless quiet.

    Warnings always show; the libraries' INFO and DEBUG records (solver iterations and the like)
    only with --verbose. Progress is a bar on a terminal and plain lines in a log
    (:mod:`poisonlab.progress`); --quiet turns it off.
    """
    level = logging.DEBUG if verbose and not quiet else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[_log_handler()],
        force=True,
    )
    progress.enable(not quiet)


def user_errors(command: F) -> F:
    """Decorator for commands: a PoisonlabError or a missing file becomes one red line, exit 2;
    Ctrl-C one yellow line, exit 130 (commands with an output folder say what was kept)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PoisonlabError as exc:
            raise fail(str(exc)) from None
        except FileNotFoundError as exc:
            raise fail(f"file not found: {exc.filename or exc}") from None
        except KeyboardInterrupt:
            raise interrupted() from None
        finally:
            progress.enable(False)  # the library stays silent when called after a command

    return wrapper  # type: ignore[return-value]
