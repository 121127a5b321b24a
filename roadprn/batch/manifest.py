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
import time
from pathlib import Path
from typing import IO, Any

from roadprn.config import Config
from roadprn.io import file_sha256

log = logging.getLogger(__name__)

MANIFEST_NAME = "roadprn_manifest.jsonl"
COMPLETE = ("done", "skipped")
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
    data = config.to_yaml_dict()
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
    """Appends records to the manifest, each one flushed and fsynced before returning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "a+", encoding="utf-8")  # noqa: SIM115
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
    """The newest record of each scene, by output folder name."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_records(path):
        if record.get("type") == "scene" and "name" in record:
            latest[record["name"]] = record
    return latest


def mismatch_reason(record: dict[str, Any] | None, out_dir: Path, cfg_hash: str,
                    model_hashes: dict[str, str]) -> str | None:
    """Why a scene must be (re)done, or ``None`` when its recorded outputs are intact."""
    if record is None:
        return "not in the manifest"
    if record.get("status") not in COMPLETE:
        return f"last status {record.get('status')}"
    if record.get("config_hash") != cfg_hash:
        return "config changed"
    if record.get("model_hashes") != model_hashes:
        return "model changed"
    files = record.get("files") or {}
    if not files:
        return "no outputs recorded"
    for key, entry in files.items():
        path = out_dir / entry["path"]
        if not path.exists():
            return f"{key} output missing"
        if path.is_file() and path.stat().st_size != entry.get("bytes"):
            return f"{key} output changed size"
        if path_digest(path)[0] != entry.get("sha256"):
            return f"{key} output checksum differs"
    return None
