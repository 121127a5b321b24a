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


_IO_PHRASES = {"no space left on device": "no space left on device",
               "disk quota exceeded": "disk quota exceeded",
               "permission denied": "permission denied",
               "read-only file system": "read-only file system"}


def io_error_line(exc: OSError) -> str:
    """One line for an I/O failure: what went wrong and the path, whoever raised it.

    Python's own errors carry ``strerror`` and ``filename``; GDAL's (through rasterio) say
    "Write failed. See previous exception for details" and hide the reason (ENOSPC, EACCES) in
    the chained CPLE error's text, so the chain is searched for a known phrase.
    """
    import os

    reason, path = None, exc.filename
    if exc.errno:
        reason = (exc.strerror or os.strerror(exc.errno)).lower()
    seen: BaseException | None = exc
    chain = []
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if reason is None:
        for item in chain:
            text = str(item).lower()
            reason = next((short for phrase, short in _IO_PHRASES.items() if phrase in text), None)
            if reason:
                break
    if path is None:
        path = next((getattr(i, "filename", None) for i in chain if getattr(i, "filename", None)),
                    None)
    if reason is None:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return f"{path}: {reason}" if path else reason
