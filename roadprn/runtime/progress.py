"""Progress of long work: a bar at a terminal, a line every 30 s anywhere else.

A batch job, CI or ``nohup`` has no terminal: tqdm's bar there is silence (or ``\\r`` noise in a
log), and a 30-minute stage looks hung. The CLI sets the mode once per process
(:func:`set_progress_mode`); library code asks :func:`progress_bar` for a bar whenever it was
told to show progress, and gets a tqdm bar, a :class:`LineProgress` or a silent bar.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO

ProgressMode = Literal["bar", "lines", "off"]

#: seconds between two progress lines outside a terminal (the environment can change it)
INTERVAL_ENV = "ROADPRN_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0

_mode: ProgressMode = "bar"  # a library caller (a notebook) asking for progress gets tqdm


def set_progress_mode(mode: ProgressMode) -> None:
    global _mode
    _mode = mode


def progress_mode() -> ProgressMode:
    return _mode


def mode_for_console(quiet: bool, stream: TextIO | None = None) -> ProgressMode:
    """``off`` with --quiet, a bar for a person at a terminal, lines for everything else."""
    if quiet:
        return "off"
    stream = stream or sys.stderr
    interactive = stream.isatty() and not os.environ.get("CI")
    return "bar" if interactive else "lines"


def interval_s() -> float:
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None,
                 desc: str = "", unit: str = "it", enabled: bool = True,
                 **tqdm_options: Any) -> Any:
    """A tqdm bar, a :class:`LineProgress` or a disabled bar (``enabled`` False, mode off)."""
    from tqdm import tqdm

    if enabled and _mode == "lines":
        return LineProgress(iterable, total=total, desc=desc, unit=unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit,
                disable=not enabled or _mode == "off", **tqdm_options)


class LineProgress:
    """tqdm's interface (``update``, ``set_postfix_str``, ``format_dict``, iteration, ``close``)
    printing ``roadprn: DESC: 12/40 tile (30 %), 0.52 tile/s, ETA 0:00:56`` to stderr at most
    every :func:`interval_s` seconds, and a last line when work that outlasted one interval
    ends."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: float | None = None,
                 desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n: float = 0
        self.postfix = ""
        self._stream = stream
        self._interval = interval_s() if interval is None else interval
        self._start = self._last = time.monotonic()
        self._printed = False
        self._closed = False
        self._lock = threading.Lock()

    @property
    def format_dict(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._start
        return {"n": self.n, "total": self.total, "elapsed": elapsed,
                "rate": self.n / elapsed if elapsed > 0 and self.n else None}

    def update(self, n: float = 1) -> None:
        with self._lock:
            self.n += n
            now = time.monotonic()
            finished = self.total is not None and self.n >= self.total  # close() says it
            if now - self._last >= self._interval and not finished:
                self._last = now
                self._emit()

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True,
                    **values: Any) -> None:
        items = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def write(self, text: str) -> None:
        """tqdm.write's job: a message on its own line."""
        stream = self._stream or sys.stderr
        try:
            stream.write(f"{text}\n")
        except (OSError, ValueError):
            return

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed on their schedule."""

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # work that outlasted one interval ends with a line, so a log shows it finished
            if self.n and (self._printed or time.monotonic() - self._start >= self._interval):
                self._emit(final=True)

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "LineProgress(iterable) to iterate"
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, final: bool = False) -> str:
        """The progress line as printed (without the ``roadprn:`` prefix)."""
        stats = self.format_dict
        elapsed, rate = stats["elapsed"], stats["rate"]
        done = _number(self.n)
        units = self.unit if self.unit in ("px", "B") or self.unit.endswith("s") else \
            f"{self.unit}s"
        parts = [f"{done}/{_number(self.total)} {units}" if self.total else f"{done} {units}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        if rate:
            parts.append(f"{_number(rate, 3)} {self.unit}/s")
        if final:
            parts.append(f"done in {_clock(elapsed)}")
        elif rate and self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: {', '.join(parts)}" if self.desc else ", ".join(parts)

    def _emit(self, final: bool = False) -> None:
        stream = self._stream or sys.stderr
        try:
            stream.write(f"roadprn: {self.line(final)}\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr never fails the work
            return
        self._printed = True


def _number(value: float | None, digits: int = 4) -> str:
    """``12``, ``0.523``, ``16.8M``: short enough for one line whatever the unit."""
    if value is None:
        return "?"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits - 1}g}{suffix}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.{digits - 1}g}"


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
