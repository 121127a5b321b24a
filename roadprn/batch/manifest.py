"""The run manifest: one JSON line per event, appended and fsynced, never rewritten.

A crash can at worst cut the last line short; readers skip such a line and the writer starts a
fresh line, so the manifest stays valid. The newest record of a scene wins: resume reads it to
decide whether the scene's outputs are still those the manifest describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from pathlib import Path, PurePosixPath
from typing import IO, Any

from roadprn.config import Config
from roadprn.errors import OutputError
from roadprn.outputs.atomic import file_sha256

log = logging.getLogger(__name__)

MANIFEST_NAME = "roadprn_manifest.jsonl"
COMPLETE = ("done", "skipped")
STATUSES = ("done", "skipped", "failed")
HASH_CHUNK = 1 << 20
# settings that change speed, not results: they must not force a rerun
RESULT_NEUTRAL = {
    ("output", "overwrite"),
    ("inference", "torch_threads"),
    ("inference", "reader_threads"),
    ("inference", "prefetch_batches"),
    ("vectorize", "workers"),
}


def config_hash(config: Config) -> str:
    """sha256 of the config keys that change outputs (threads and overwrite left out)."""
    data = config.pipeline_dict()
    data.pop("batch", None)
    for section, key in RESULT_NEUTRAL:
        data.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def path_digest(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, or of every file of a folder output (e.g. a shapefile set)."""
    if path.is_dir():
        digest = hashlib.sha256()
        size = 0
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(child.relative_to(path).as_posix().encode())
            digest.update(file_sha256(child).encode())
            size += child.stat().st_size
        return digest.hexdigest(), size
    return file_sha256(path), path.stat().st_size


def describe_files(files: dict[str, Path], root: Path) -> dict[str, dict[str, Any]]:
    """Output files as paths relative to ``root`` (the run folder can move) with checksums."""
    out = {}
    for key, path in files.items():
        sha, size = path_digest(path)
        out[key] = {"path": Path(os.path.relpath(path, root)).as_posix(), "sha256": sha,
                    "bytes": size}
    return out


class ManifestWriter:
    """Appends records to the manifest, each one flushed and fsynced before returning.

    The writer holds an exclusive lock on the manifest while it is open: two ``batch`` runs
    on the same ``--out`` would interleave records and clear each other's scene folders. The
    lock (``flock``) belongs to the open file, so a killed run never leaves a stale one.
    """

    def __init__(self, path: Path) -> None:
        import fcntl

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise OutputError(f"another roadprn batch run is writing {path.parent} (its "
                              f"manifest {path.name} is locked); wait for it, or choose "
                              "another --out") from None
        except OSError:
            pass  # a file system without locks (some network mounts): run unguarded
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:
            self._fh.seek(self._fh.tell() - 1)
            last = self._fh.read(1)
            if last != "\n":  # a line cut short by a crash: start afresh on a new line
                self._fh.write("\n")

    def append(self, record: dict[str, Any]) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        self._fh.write(json.dumps(record, sort_keys=False, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every well-formed record; a damaged line (crash mid-write) is skipped with a warning."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is damaged and ignored", path, number)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def latest_scene_records(path: Path) -> dict[str, dict[str, Any]]:
    """The newest well-formed record of each scene, by output folder name.

    A scene record whose fields have the wrong types (edited by hand, written by another tool)
    is skipped with a warning: resume must never fail on it, only redo the scene.
    """
    latest: dict[str, dict[str, Any]] = {}
    for record in read_records(path):
        if record.get("type") != "scene":
            continue
        problem = record_problem(record)
        if problem is not None:
            log.warning("%s: a scene record is malformed (%s) and ignored", path, problem)
            continue
        latest[record["name"]] = record
    return latest


def record_problem(record: dict[str, Any]) -> str | None:
    """What makes a scene record unusable for resume, or ``None`` when it is well formed."""
    name = record.get("name")
    if not isinstance(name, str) or not name:
        return "no scene folder name"
    if record.get("status") not in STATUSES:
        return f"unknown status {record.get('status')!r}"[:120]
    hashes = record.get("model_hashes")
    if hashes is not None and not (isinstance(hashes, dict)
                                   and all(isinstance(v, str) for v in hashes.values())):
        return "model_hashes is not a mapping of strings"
    files = record.get("files")
    if files is None:
        return None
    if not isinstance(files, dict):
        return "files is not a mapping"
    for key, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int) and not isinstance(entry["bytes"], bool)
                and entry["bytes"] >= 0):
            return f"output {key!r} lacks path, sha256 or bytes"[:120]
    return None


def mismatch_reason(record: dict[str, Any] | None, out_dir: Path, cfg_hash: str,
                    model_hashes: dict[str, str] | None) -> str | None:
    """Why a scene must be (re)done, or ``None`` when its recorded outputs are intact.

    ``model_hashes``: the models this run would use for the scene (``None``: unknown, e.g. its
    header cannot be read now, so it is redone and fails or succeeds on its own).
    """
    if record is None:
        return "not in the manifest"
    problem = record_problem(record)
    if problem is not None:
        return f"malformed record ({problem})"
    if record.get("status") not in COMPLETE:
        return f"last status {record.get('status')}"
    if record.get("config_hash") != cfg_hash:
        return "config changed"
    if model_hashes is None:
        return "the scene's model cannot be chosen now"
    if record.get("model_hashes") != model_hashes:
        return "model changed"
    files = record.get("files") or {}
    if not files:
        return "no outputs recorded"
    for key, entry in files.items():
        reason = _output_mismatch(out_dir, entry)
        if reason is not None:
            return f"{key} output {reason}"
    return None


def _output_mismatch(out_dir: Path, entry: dict[str, Any]) -> str | None:
    """Why one recorded output is not the file it was, reading at most its recorded size.

    Only regular files (or folders of regular files) inside ``out_dir`` are hashed: a record
    naming ``/dev/zero``, a FIFO or a path outside the run folder must not hang or leak a read.
    """
    rel = PurePosixPath(entry["path"])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return "path is outside the output folder"
    path = out_dir / rel
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISDIR(info.st_mode):
        return _folder_mismatch(path, entry)
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size != entry["bytes"]:
        return "changed size"
    digest = bounded_sha256(path, entry["bytes"])
    if digest is None:
        return "changed while it was read"
    return None if digest == entry["sha256"] else "checksum differs"


def _folder_mismatch(path: Path, entry: dict[str, Any]) -> str | None:
    digest = hashlib.sha256()
    total = 0
    children = sorted(path.rglob("*"))
    for child in children:
        info = os.lstat(child)
        if stat.S_ISDIR(info.st_mode):
            continue
        if not stat.S_ISREG(info.st_mode):
            return "holds something that is not a regular file"
        total += info.st_size
        if total > entry["bytes"]:
            return "changed size"
        child_digest = bounded_sha256(child, info.st_size)
        if child_digest is None:
            return "changed while it was read"
        digest.update(child.relative_to(path).as_posix().encode())
        digest.update(child_digest.encode())
    if total != entry["bytes"]:
        return "changed size"
    return None if digest.hexdigest() == entry["sha256"] else "checksum differs"


def bounded_sha256(path: Path, size: int) -> str | None:
    """sha256 of a regular file of exactly ``size`` bytes; ``None`` if it is not one.

    Opened without following links and without blocking, checked again on the open handle,
    and never read past ``size`` + 1 bytes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        left = size + 1
        while left > 0:
            block = fh.read(min(HASH_CHUNK, left))
            if not block:
                break
            digest.update(block)
            left -= len(block)
        if left != 1:  # shorter or longer than recorded
            return None
        return digest.hexdigest()
