"""Entry point: ``poisonlab --help`` lists the commands; each lives in its own module here."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

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


class Typer(typer.Typer):
    """typer.Typer whose commands' help is their docstring through :func:`unwrap_help`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        """typer's ``command`` decorator, with the help text unwrapped."""
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


def main(prog_name: str | None = None) -> None:
    """Run the app; user errors become one red line and exit status 2, never a traceback."""
    from poisonlab.cli.console import fail

    try:
        app(standalone_mode=True, prog_name=prog_name)
    except PoisonlabError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
    except KeyboardInterrupt:
        from poisonlab.cli.console import err

        err.print("[yellow]interrupted[/]")
        sys.exit(130)
