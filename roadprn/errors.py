"""Errors a user can cause, each with its own exit code.

The CLI catches :class:`RoadprnError` and prints ``roadprn: error: <message>`` as one line,
then exits with ``exit_code``. Anything else is a bug: one ``internal error`` line naming a log
file that holds the traceback (:mod:`roadprn.runtime.crashlog`), exit 70.
"""

from __future__ import annotations

import errno
import os
import shutil


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


class WriteFailed(RoadprnError):
    """Writing outputs failed (disk full, permission lost mid-write); nothing was left."""

    exit_code = 1


class Interrupted(RoadprnError):
    """The user interrupted the run (Ctrl-C / SIGTERM); partial outputs were removed."""

    exit_code = 130


# How libraries that report I/O failures as text (GDAL's CPLE errors, SQLite through the
# GeoPackage driver) name them, most specific first
_IO_PHRASES = {"no space left on device": errno.ENOSPC,
               "disk is full": errno.ENOSPC,  # SQLite: "database or disk is full"
               "disk quota exceeded": errno.EDQUOT,
               "permission denied": errno.EACCES,
               "read-only file system": errno.EROFS,
               "read-only": errno.EACCES,
               "readonly": errno.EACCES}  # SQLite: "attempt to write a readonly database"


def errno_in_text(text: str) -> int | None:
    """The errno an error message describes in words, if it is one of :data:`_IO_PHRASES`."""
    text = text.lower()
    return next((code for phrase, code in _IO_PHRASES.items() if phrase in text), None)


def one_line(what: BaseException | str, limit: int | None = 200, *, more: str = "") -> str:
    """``what``'s text as one line of at most ``limit`` characters: every error reason in the
    project goes through here, so a library's multi-line message (GDAL, pickle, SQLite) never
    breaks the CLI's one-line rule. Runs of whitespace become one space; when cut, ``more``
    ("…") ends the text within the limit; an exception without text gives its type's name."""
    text = " ".join(str(what).split())
    if not text and isinstance(what, BaseException):
        text = type(what).__name__
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - len(more)] + more


def gdal_cause(exc: BaseException) -> BaseException:
    """The exception that holds GDAL's own words: rasterio raises "... See previous exception
    for details" and chains the CPLE error that says what failed."""
    seen = exc
    while "previous exception" in str(seen) and (seen.__cause__ or seen.__context__):
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return seen


def gdal_reason(exc: BaseException, limit: int = 200) -> str:
    """GDAL's own words on one line (:func:`gdal_cause`, then :func:`one_line`)."""
    return one_line(gdal_cause(exc), limit)


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def io_error_reason(exc: OSError) -> str:
    """What went wrong, in a few words ("no space left on device"), whoever raised it.

    Python's own errors carry ``errno``; GDAL's (through rasterio) say "Write failed. See
    previous exception for details" and hide the reason (ENOSPC, EACCES) in the chained CPLE
    error's text, so the chain is searched for a known phrase.
    """
    if exc.errno and exc.errno != errno.EIO:
        return os.strerror(exc.errno).lower()
    for item in _chain(exc):
        code = errno_in_text(str(item))
        if code is not None:
            return os.strerror(code).lower()
    text = exc.strerror if exc.errno else str(exc)
    return one_line(str(text), 300) or type(exc).__name__


def disk_nearly_full(folder: str | os.PathLike[str], margin: int = 1 << 20) -> bool:
    """Less than ``margin`` bytes free where ``folder`` lives.

    SQLite (GeoPackage) and libtiff do not always say "disk full" when the disk is full: a
    failed page write turns up later as "no such table" or a short read. A write that failed
    on a nearly full file system is reported as what it most likely was.
    """
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False


def io_error_path(exc: OSError) -> str | None:
    """The file an I/O error is about, if any error in the chain names one."""
    return next((str(getattr(i, "filename")) for i in _chain(exc)  # noqa: B009 - not OSError
                 if getattr(i, "filename", None)), None)


def io_error_line(exc: OSError) -> str:
    """One line for an I/O failure: the path (when known) and the reason."""
    path, reason = io_error_path(exc), io_error_reason(exc)
    return f"{path}: {reason}" if path else reason
