"""Last-resort reporting of bugs: one line for the user, the full traceback in a log file.

A user running an archive overnight must never see a 40-line traceback in place of the one
line every other failure gives, yet the team needs the traceback to fix the bug. Unexpected
exceptions therefore go to a log file (under the user's cache folder, or a folder the caller
names, e.g. a batch run's output folder) and the console gets
``roadprn: internal error: <type>: <message> (details: <log file>)``.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import traceback
import uuid
from pathlib import Path

from roadprn import __version__

INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h)
MAX_MESSAGE_CHARS = 300


def crash_log_folder() -> Path:
    """``$ROADPRN_LOG_DIR``, else ``$XDG_CACHE_HOME/roadprn/logs`` (``~/.cache/roadprn/logs``)."""
    explicit = os.environ.get("ROADPRN_LOG_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "roadprn" / "logs"


def short_message(exc: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``Type: message`` on one line, capped (a message may hold a whole XML file)."""
    from roadprn.errors import one_line

    text = one_line(exc, None)
    if text == type(exc).__name__:
        return text
    return one_line(f"{type(exc).__name__}: {text}", limit, more="…")


def write_crash_log(exc: BaseException, folder: str | os.PathLike[str] | None = None,
                    context: str = "") -> Path | None:
    """Write ``exc``'s traceback to a new file in ``folder`` (default :func:`crash_log_folder`).

    Falls back to the system temporary folder; returns ``None`` only if nothing is writable
    (reporting a bug must never raise a second one).
    """
    stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    name = f"roadprn-crash-{stamp}-{uuid.uuid4().hex[:6]}.log"
    body = (f"roadprn {__version__} internal error {stamp}\n"
            + (f"context: {context}\n" if context else "")
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    candidates = [Path(folder)] if folder is not None else []
    candidates += [crash_log_folder(), Path(tempfile.gettempdir())]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            path = candidate / name
            path.write_text(body, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def internal_error_line(exc: BaseException, log_path: Path | None) -> str:
    details = f" (details: {log_path})" if log_path is not None else ""
    return f"internal error: {short_message(exc)}{details}"
