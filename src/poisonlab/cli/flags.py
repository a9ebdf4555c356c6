"""Library messages name Python parameters; the CLI shows its own option names instead.

The library writes a parameter a caller can set in backticks (``"needs a clean held-out set
(`holdout`)"``), which reads right from Python. :func:`as_flags` rewrites the parameters that are
command-line options (``--holdout``) before the CLI prints a message; other backticked words are
left as they are.
"""

from __future__ import annotations

import logging
import re

#: Python parameter → command-line option, where the option is not simply ``--name-with-dashes``.
OPTIONS: dict[str, str] = {
    "evaluate=False": "--no-eval",
    "head=lgm": "--loss lgm",
    "overrides": "--set",
}
#: Parameters that are options of some command (translated as ``--name-with-dashes``).
PARAMETERS = frozenset(
    {
        "address",
        "classes",
        "cpus_per_task",
        "data",
        "executor",
        "holdout",
        "lgm_model",
        "limit",
        "max_cells",
        "model",
        "threads",
        "workers",
    }
)
_BACKTICKED = re.compile(r"`([A-Za-z_][A-Za-z0-9_=]*)`")


def option(parameter: str) -> str | None:
    """The command-line option for a library parameter, None when it is not one."""
    if parameter in OPTIONS:
        return OPTIONS[parameter]
    if parameter in PARAMETERS:
        return "--" + parameter.replace("_", "-")
    return None


def as_flags(message: str) -> str:
    """``message`` with every backticked parameter that is a CLI option replaced by the option."""
    return _BACKTICKED.sub(lambda m: option(m.group(1)) or m.group(0), message)


class OptionNames(logging.Formatter):
    """A log formatter that shows library warnings with the CLI's option names.

    A formatter, not a filter: the record itself is left as the library wrote it, so other
    handlers (a log file, pytest's capture) see the library's parameter names.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The formatted message with backticked parameters shown as options."""
        return as_flags(super().format(record))
