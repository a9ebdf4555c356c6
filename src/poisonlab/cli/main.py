"""Entry point: ``poisonlab --help`` lists the commands; each lives in its own module here."""

from __future__ import annotations

import inspect
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from poisonlab import __version__
from poisonlab.errors import PoisonlabError

F = TypeVar("F", bound=Callable[..., Any])


def unwrap_help(text: str) -> str:
    """A docstring as help text: each prose paragraph on one line, so the terminal wraps it at its
    own width; indented paragraphs (examples) keep their lines.

    Docstrings are wrapped at 100 columns in the source, and typer's rich mode keeps single line
    breaks after the first paragraph: without this, help at 80 columns breaks mid-sentence.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if all(line[:1].isspace() for line in p.splitlines()) else " ".join(p.split())
        for p in paragraphs
    )


def _untyped_flags(params: list[Any]) -> None:
    """Flags take no value, so their help shows no type (typer writes ``--force <bool>``, which
    reads as if it wanted ``--force true``)."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class Command(TyperCommand):
    """A command whose help shows flags without a type and its usage line as click writes it,
    ``poisonlab scan [OPTIONS] DATA`` (typer writes required arguments as ``{data}``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """typer's rich help, flags untyped."""
        _untyped_flags(self.get_params(ctx))
        super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS]``, then each argument by its metavar: ``NAME``, ``[NAME]`` when optional."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                pieces.append(
                    (name if param.required else f"[{name}]") + "..." * (param.nargs != 1)
                )
        return pieces


class Group(TyperGroup):
    """A command group whose help shows flags without a type (``--help``, ``--version``)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """typer's rich help, flags untyped."""
        _untyped_flags(self.get_params(ctx))
        super().format_help(ctx, formatter)


class Typer(typer.Typer):
    """typer.Typer whose commands' help is their docstring through :func:`unwrap_help`, with
    :class:`Command` and :class:`Group` help (flags untyped, click's usage line)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        """typer's ``command`` decorator, with the help text unwrapped."""
        kwargs.setdefault("cls", Command)
        register = super().command(*args, **kwargs)

        def decorator(function: F) -> F:
            registered = register(function)
            info = self.registered_commands[-1]
            info.help = unwrap_help(info.help or inspect.getdoc(function) or "")
            return registered

        return decorator


app = Typer(
    name="poisonlab",
    help=(
        "Find poisoned training data before it poisons a model, and attack and defend image "
        "classifiers reproducibly.\n\nTypical flow: `poisonlab data info DATA`, `poisonlab train`, "
        "`poisonlab attack`, `poisonlab scan`. `poisonlab demo` runs the whole tour on digits."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"poisonlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find poisoned training data; attack and defend image classifiers."""


def _register_commands() -> None:
    """Attach the command modules (each module adds its commands to ``app``)."""
    from poisonlab.cli import (  # noqa: F401
        attack_cmd,
        data_cmd,
        demo_cmd,
        report_cmd,
        run_cmd,
        scan_cmd,
        table_cmd,
        train_cmd,
    )


_register_commands()


_INTERRUPTED = 130  # 128 + SIGINT, the shell's status for Ctrl-C
_TERMINATED = 128 + signal.SIGTERM  # 143, the shell's status for a process ended by SIGTERM
_terminated = False


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (kill, a CI timeout, a scheduler) ends a command as Ctrl-C does: its output
    folder is left as it was and it says so, but the exit status is 143, not Ctrl-C's 130.
    A second SIGTERM kills at once."""
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise KeyboardInterrupt


def _status(code: str | int | None) -> str | int | None:
    """Ctrl-C's 130 becomes 143 when SIGTERM, not Ctrl-C, interrupted the command."""
    return _TERMINATED if _terminated and code == _INTERRUPTED else code


def main(prog_name: str | None = None) -> None:
    """Run the app; user errors become one red line and exit status 2, never a traceback."""
    from poisonlab.cli.console import fail

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # without it: killed mid-write,
        signal.signal(signal.SIGTERM, _interrupt)  # its temporary folder left behind
    try:
        app(standalone_mode=True, prog_name=prog_name)
    except SystemExit as exc:  # the commands exit 130 after an interrupt, whatever its signal
        raise SystemExit(_status(exc.code)) from None
    except PoisonlabError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except KeyboardInterrupt:
        from poisonlab.cli.console import err

        err.print("[yellow]interrupted[/]")
        sys.exit(_status(_INTERRUPTED))
