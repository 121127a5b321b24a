"""One run's outputs staged together and published at the very end, guarded by a run marker.

``extract`` writes several files (probability, mask, refined mask, road network). Each is atomic
on its own, but a SIGKILL, the OOM killer or a power cut between stages used to leave the first
rasters under their final names: finished-looking files without roads, which a rerun then
refused to replace. Here every output is written into a hidden staging folder beside the
outputs, and only when all are complete are they renamed to their final names (same file
system, so each rename is atomic).

A marker file, created exclusively when a run starts, says a run is in progress. It is also the
lock that stops two runs from writing the same outputs at once: a second run while the first is
alive fails with one line. A marker whose process is gone belongs to a run that was killed: a
rerun removes what it left (its staging folder and, if it died while publishing, its
half-published outputs) and proceeds without ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadprn.errors import OutputError, RoadprnError, WriteFailed, disk_nearly_full, io_error_reason
from roadprn.outputs.atomic import check_writable, safe_name

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".roadprn-run"
STAGING_PREFIX = ".roadprn-staging-"
MAX_MARKER_BYTES = 1 << 16


@dataclass(frozen=True)
class StagedRun:
    """Where a run writes (``folder``) and where its files end up (``final_folder``)."""

    folder: Path
    final_folder: Path
    marker: Path

    def final_path(self, staged: Path) -> Path:
        return self.final_folder / Path(staged).name


def marker_path(final_folder: Path, name: str) -> Path:
    return final_folder / f".{name}{MARKER_SUFFIX}"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a reused pid is not taken for the run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(record: dict[str, Any]) -> bool:
    """Is the run that wrote ``record`` still running? Unknown hosts count as alive."""
    if record.get("host") != socket.gethostname():
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = record.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def _read_marker(marker: Path) -> dict[str, Any]:
    try:
        with open(marker, "rb") as fh:
            record = json.loads(fh.read(MAX_MARKER_BYTES).decode("utf-8", "replace"))
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_marker(marker: Path, record: dict[str, Any], *, exclusive: bool) -> None:
    data = json.dumps(record).encode()
    if exclusive:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return
    tmp = marker.with_name(marker.name + f".{uuid.uuid4().hex[:6]}")
    tmp.write_bytes(data)
    os.replace(tmp, marker)


def _clear_abandoned(marker: Path, record: dict[str, Any]) -> None:
    """Remove what a killed run left: its staging folder, and half-published outputs."""
    folder = marker.parent
    staging = record.get("staging")
    if isinstance(staging, str) and Path(staging).name.startswith(STAGING_PREFIX):
        shutil.rmtree(folder / Path(staging).name, ignore_errors=True)
    if record.get("phase") == "publishing":
        for name in record.get("outputs", []):
            if isinstance(name, str) and name == Path(name).name:  # never a path outside
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    (folder / name).unlink()
    marker.unlink(missing_ok=True)


def _acquire(marker: Path, record: dict[str, Any]) -> None:
    for _ in range(3):
        try:
            _write_marker(marker, record, exclusive=True)
            return
        except FileExistsError:
            previous = _read_marker(marker)
            if previous and _alive(previous):
                raise OutputError(
                    f"another roadprn run (pid {previous.get('pid')} on {previous.get('host')}) "
                    f"is writing these outputs in {marker.parent}; wait for it to finish, or "
                    f"delete {marker} if that run is gone") from None
            log.warning("%s: an earlier run of %s was interrupted%s; removing what it left",
                        marker.parent, marker.name.removeprefix(".").removesuffix(MARKER_SUFFIX),
                        " while publishing" if previous.get("phase") == "publishing" else "")
            _clear_abandoned(marker, previous)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise OutputError(f"output folder is not writable: {marker.parent}") from exc
            raise
    raise OutputError(f"cannot take the run marker {marker}: other runs keep replacing it")


@contextlib.contextmanager
def staged_run(final_folder: str | Path, name: str, outputs: Sequence[Path],
               overwrite: bool) -> Iterator[StagedRun]:
    """Stage a run's outputs; publish them under ``final_folder`` only if the body succeeds.

    ``outputs``: the final paths the run may write (checked like any output: they must not
    exist unless ``overwrite``); files the body writes into the staging folder are published
    under the same names. On any failure or interruption nothing of this run is left.
    """
    final_folder = Path(final_folder)
    if any(not ch.isprintable() for ch in str(final_folder.absolute())):
        raise OutputError(f"output folder {str(final_folder)!r} has a control character (e.g. a "
                          "newline) in its path, where GDAL cannot create a GeoPackage; choose "
                          "another --out")
    marker = marker_path(final_folder, name)
    created = not final_folder.exists()
    check_writable(marker, overwrite=True)  # creates the folder, checks that it is writable
    staging = final_folder / f"{STAGING_PREFIX}{safe_name(name)}-{uuid.uuid4().hex[:8]}"
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "process_start": _process_start(os.getpid()), "started": time.time(),
              "staging": staging.name, "phase": "running",
              "outputs": [Path(p).name for p in outputs]}
    _acquire(marker, record)
    published: list[Path] = []
    try:
        for final in outputs:
            check_writable(Path(final), overwrite)
        staging.mkdir()
        run = StagedRun(staging, final_folder, marker)
        yield run
        _publish(run, record, published, overwrite)
    except BaseException as exc:
        # before cleaning up: on a full disk GDAL's later errors ("failed to read directory",
        # CPLE_AppDefinedError, not even an OSError) hide the cause
        full = (isinstance(exc, Exception)
                and (not isinstance(exc, RoadprnError) or staging.name in str(exc))
                and disk_nearly_full(final_folder))
        shutil.rmtree(staging, ignore_errors=True)
        for path in published:  # a failed publish leaves no mixture
            path.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        if created:  # a folder this run made, left empty: not left behind either
            with contextlib.suppress(OSError):
                final_folder.rmdir()
        if full or isinstance(exc, OSError):
            # name the output folder: a plain write() names no file at all, GDAL names a
            # temporary file in a staging folder that no longer exists
            reason = io_error_reason(exc) if isinstance(exc, OSError) else ""
            if full and reason not in ("no space left on device", "disk quota exceeded"):
                reason = "no space left on device"
            raise WriteFailed(f"cannot write the outputs in {final_folder}: {reason}; nothing "
                              "was left") from exc
        raise
    shutil.rmtree(staging, ignore_errors=True)
    marker.unlink(missing_ok=True)


def _publish(run: StagedRun, record: dict[str, Any], published: list[Path],
             overwrite: bool) -> None:
    """Rename every staged file to its final name; the marker says which, should this die.

    Files the run did not announce up front (e.g. figures named after their results) are
    checked here, before the first rename, so they never replace a file without ``overwrite``.
    """
    staged = sorted(p for p in run.folder.iterdir() if p.is_file())
    for path in staged:
        if path.name not in record["outputs"]:
            check_writable(run.final_path(path), overwrite)
    record = {**record, "phase": "publishing",
              "outputs": sorted(set(record["outputs"]) | {p.name for p in staged})}
    _write_marker(run.marker, record, exclusive=False)
    for path in staged:
        final = run.final_path(path)
        os.replace(path, final)
        published.append(final)
