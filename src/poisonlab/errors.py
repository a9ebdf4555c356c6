"""Exceptions that carry a one-line, user-facing message (the CLI prints them without a traceback)."""

from __future__ import annotations

from collections.abc import Sequence


class PoisonlabError(Exception):
    """Base class for errors caused by the user's input, files or parameters."""


class DataError(PoisonlabError, ValueError):
    """A data file or data set is missing, malformed or out of range."""


class CheckpointError(PoisonlabError, ValueError):
    """A checkpoint is missing, malformed or does not match the requested architecture."""


class ConfigError(PoisonlabError, ValueError):
    """A parameter, option or configuration value is not one of the allowed choices."""


class BudgetError(PoisonlabError, ValueError):
    """An attack budget cannot be met with the data available (never silently shrunk)."""


class NumericalError(PoisonlabError, FloatingPointError):
    """A computation gave NaN or infinite values at the scale, dtype or parameters it was given
    (e.g. an overflow in float32 that float64 or a larger regularisation avoids)."""


def did_you_mean(name: str, choices: Sequence[str], *, suffix: str = "") -> str:
    """`` (did you mean X?)`` naming the choice closest to a mistyped ``name`` (e.g.
    ``spectral-signature``, ``contamnation``), or "" when none is close or ``name`` is one of them.

    ``suffix`` follows the suggested name (e.g. ``":0.1"``, what followed the mistyped one). The
    one place where error messages of the CLI and the library look for a typo's intended name.
    """
    from difflib import get_close_matches

    if name in choices:
        return ""
    close = get_close_matches(name, choices, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}{suffix}?)" if close else ""
