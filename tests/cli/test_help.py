"""Every command's --help read at 80 columns (issue: help broke lines mid-sentence because
docstrings are wrapped in the source; examples lost their indentation or wrapped)."""

from __future__ import annotations

import itertools

import pytest
from typer.testing import CliRunner

from poisonlab.cli.main import app, unwrap_help

runner = CliRunner()
WIDTH = 80
COMMANDS = [[], ["run"], ["scan"], ["attack"], ["train"], ["demo"], ["table"], ["report"]]
COMMANDS += [["data"], ["data", "info"]]


def help_text(args: list[str]) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


def description(text: str) -> list[str]:
    """The lines between the usage line and the first option panel."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 1
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    return [line.rstrip() for line in lines[start:end]]


def is_example(line: str) -> bool:
    return line.startswith("     ") and line.strip() != ""


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "poisonlab")
def test_help_reads_well_at_80_columns(args):
    text = help_text(args)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    lines = description(text)
    for line, after in itertools.pairwise(lines):
        if not line.strip() or not after.strip():
            continue
        if is_example(line):  # an example never wraps: its next line is indented too
            assert is_example(after), (line, after)
            continue
        # prose is wrapped only where the next word does not fit (text area: WIDTH - 2)
        assert len(line.strip()) + 1 + len(after.split()[0]) > WIDTH - 2, (line, after)
    for line in lines:  # a command line shown in the text is an indented example
        if line.strip().startswith("poisonlab "):
            assert is_example(line), line


def test_unwrap_help_joins_prose_and_keeps_examples():
    text = (
        "Title.\n\n    Prose wrapped\n    in the source.\n\n        poisonlab x \\\n            --y"
    )
    assert unwrap_help(text) == (
        "Title.\n\nProse wrapped in the source.\n\n    poisonlab x \\\n        --y"
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "poisonlab")
def test_flags_show_no_type_and_arguments_their_name(args):
    """Issue: typer's help showed every flag as `--force <bool>` (as if it took `--force true`),
    repeatable options as `--set <list[str]>` and required arguments as `{data}` on the usage
    line, where the text says DATA."""
    text = help_text(args)
    assert "<bool>" not in text
    assert "list[" not in text  # repeatable options show their form: --set <key=value>
    assert "…" not in text  # a wide type column cut nothing short
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage
    assert usage.split("[OPTIONS]")[1].strip() == USAGE_ARGUMENTS[" ".join(args)], usage


USAGE_ARGUMENTS = {
    "": "COMMAND [ARGS]...",
    "data": "COMMAND [ARGS]...",
    "run": "CONFIG",
    "scan": "DATA",
    "attack": "NAME",
    "train": "",
    "demo": "",
    "table": "RUNS",
    "report": "RUN_DIR",
    "data info": "PATH_OR_NAME",
}


def test_scan_out_help_agrees_with_force():
    """scan's --out said "(must not exist)" beside a --force that replaces an earlier scan."""
    text = " ".join(help_text(["scan"]).replace("│", " ").split())
    assert "must not exist" not in text
    assert "A new folder for the results (--force replaces an earlier scan)." in text


# Options whose absence is itself the meaning (no budget, no extra data, no filter), so their
# help need not name a default.
NO_DEFAULT = {
    ("attack", "--model"), ("attack", "--param"), ("attack", "--limit"), ("attack", "--count"),
    ("attack", "--source"), ("train", "--limit"), ("scan", "--holdout"), ("scan", "--param"),
    ("run", "--set"), ("run", "--only"), ("table", "--like"), ("table", "--cols"),
    ("report", "--data"),
}  # fmt: skip


@pytest.mark.parametrize("name", ["attack", "train", "scan", "run", "table", "report"])
def test_every_option_says_its_default(name):
    """Issue: `attack --help` gave no default for --trigger, --size, --position, --offset,
    --color, --amplitude, --target, --target-rate (they depend on the attack and trigger), nor
    `train` for --patience, `scan` for --arch and --classes, `run` for --workers (local)."""
    import typer.main

    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    silent = []
    for param in command.params:
        flag = max(param.opts, key=len)
        shown = param.default is not None and not getattr(param, "is_flag", False)
        if param.required or getattr(param, "is_flag", False) or shown:
            continue  # required, an on/off flag, or typer prints [default: ...]
        if (name, flag) in NO_DEFAULT:
            continue
        if "default" not in (param.help or ""):
            silent.append(flag)
    assert not silent, f"{name}: options whose help names no default: {silent}"


def test_limit_help_says_about_since_each_class_keeps_its_rounded_share():
    """--limit said "at most this many training images", but each class keeps its share, rounded:
    --limit 9 on the 10 digit classes keeps 10."""
    from poisonlab.data.prepare import prepare_splits

    assert len(prepare_splits("digits", seed=0, limit=9).train) == 10
    for command in ("train", "attack"):
        text = " ".join(help_text([command]).replace("│", " ").split())
        assert "Use about this many training images" in text
        assert "at most this many training images" not in text


@pytest.mark.parametrize("args", [c for c in COMMANDS if c not in ([], ["data"])], ids=" ".join)
def test_every_command_help_shows_examples(args):
    """README: "Every command has a --help with examples"; `demo --help` had none."""
    lines = description(help_text(args))
    assert any(line.strip() in ("Example:", "Examples:") for line in lines)
    assert any(is_example(line) and line.strip().startswith("poisonlab ") for line in lines)


def test_run_help_names_the_status_of_a_run_ended_by_sigterm():
    """run --help gave 1 (a cell failed) and 130 (Ctrl-C) but not the 143 a run ended by kill or
    a CI timeout exits with, which a script resuming it tests for."""
    from poisonlab.cli.main import _INTERRUPTED, _TERMINATED

    text = " ".join(help_text(["run"]).replace("│", " ").split())
    assert f"{_INTERRUPTED} on Ctrl-C" in text
    assert f"{_TERMINATED} when ended by SIGTERM" in text
