"""Exceptions for mistakes a user can fix.

Anything raised as a :class:`UserError` is shown by ``main.py`` as one line and
exit code 2, without a traceback; every other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's config, files or inputs (not a bug)."""


class ConfigError(UserError):
    """An invalid configuration key, type or value."""


class DataError(UserError):
    """Missing or malformed data files, or a dataset that cannot be built."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or belongs to another model/dataset."""


class TooFewSamples(UserError):
    """Too few inputs qualify for a step (e.g. fewer than two classified as the target class)."""


class InterventionError(UserError):
    """An intervention that names a layer, unit or module we cannot act on."""
