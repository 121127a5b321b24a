"""SIGTERM handled like Ctrl-C, so every command stops cleanly when killed."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """A signal handler that takes the Ctrl-C path."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler, a container stop) takes the Ctrl-C path.

    Every ``atomic_output`` then removes its temporary file, batch keeps its manifest consistent,
    and the command exits 130, instead of Python's default of dying at once and leaving
    temporary files behind.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. CliRunner in a thread)
        return

    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
