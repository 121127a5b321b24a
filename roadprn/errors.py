"""Errors a user can cause, each with its own exit code.

The CLI catches :class:`RoadprnError` and prints ``roadprn: error: <message>`` as one line,
then exits with ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RoadprnError(Exception):
    """Base class of user-facing errors; the message must be one clear line with context."""

    exit_code: int = 1


class ConfigError(RoadprnError):
    """A config file or option has an unknown key or a bad value."""

    exit_code = 2


class InputError(RoadprnError):
    """An input (scene, labels, checkpoint path) is missing, unreadable or unsuitable."""

    exit_code = 3


class OutputError(RoadprnError):
    """An output cannot be written: it exists (without --overwrite), or the folder is unwritable."""

    exit_code = 4


class ModelError(RoadprnError):
    """A checkpoint is corrupt, foreign, or does not match the scene or the base model."""

    exit_code = 5


class BatchFailuresError(RoadprnError):
    """A batch run finished but some scenes failed."""

    exit_code = 6


class Interrupted(RoadprnError):
    """The user interrupted the run (Ctrl-C / SIGTERM); partial outputs were removed."""

    exit_code = 130
