"""README's command-line claims checked against the commands (issue: README said every command
takes --device/--seed/--quiet/--verbose; data info, table, report and run did not)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from poisonlab.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def commands() -> dict[str, Any]:
    """Every command by its name on the command line (``data info`` included)."""
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):  # a group: poisonlab data
            found |= {f"{name} {sub}": cmd for sub, cmd in command.commands.items()}
        else:
            found[name] = command
    return found


def options(command: Any) -> set[str]:
    given = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    return given | {"--help"}


def test_every_option_in_a_readme_command_line_exists():
    """`poisonlab CMD ... --opt` anywhere in README (code blocks, the command table)."""
    known = commands()
    checked = 0
    for line in README.read_text().splitlines():
        for match in re.finditer(r"poisonlab ((?:data )?[a-z]+)\b([^`|#]*)", line):
            name, rest = match.groups()
            if name not in known:
                continue
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                assert option in options(known[name]), f"README: {name} {option} ({line})"
                checked += 1
    assert checked >= 10


def test_the_options_readme_promises_per_command():
    """The paragraph on options every command (or the named commands) take."""
    text = " ".join(README.read_text().split())
    start = text.index("Every command has a `--help`")
    paragraph = text[start : text.index("Help texts and argument errors", start)]
    known = commands()
    promised = 0
    for clause in paragraph.split(";"):
        named = [c for c in re.findall(r"`([a-z ]+)`", clause) if c in known]
        targets = list(known) if "every command" in clause.lower() else named
        assert targets, clause
        for option in re.findall(r"`(--[a-z-]+)`", clause):
            for name in targets:
                assert option in options(known[name]), f"README promises {name} {option}"
                promised += 1
    assert promised >= len(known) * 3
