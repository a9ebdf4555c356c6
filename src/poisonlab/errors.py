"""Exceptions that carry a one-line, user-facing message (the CLI prints them without a traceback)."""

from __future__ import annotations


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
