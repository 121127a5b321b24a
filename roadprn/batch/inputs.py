"""Which scenes a batch run processes, and the output folder each one gets.

Inputs may be files, folders (searched recursively for a pattern), glob patterns, or a list file
(one path per line, or a CSV with a ``path`` column). GDAL virtual paths (``/vsis3/...``,
``/vsicurl/...``) and URLs pass through untouched: GDAL opens them, not Python.

Each scene's folder name is derived from its path alone (``<safe stem>-<hash of path>``), so it is
stable across runs with different input lists and can never leave ``--out``.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from roadprn.errors import InputError

REMOTE_PREFIXES = ("/vsi", "s3://", "gs://", "http://", "https://", "az://")
LIST_SUFFIXES = (".txt", ".lst", ".csv")
GLOB_CHARS = re.compile(r"[*?\[]")
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_STEM = 60


@dataclass(frozen=True)
class SceneInput:
    """A scene path exactly as GDAL should open it, and its output folder name under --out."""

    path: str
    name: str


def is_remote(path: str) -> bool:
    return path.startswith(REMOTE_PREFIXES)


def collect_inputs(items: list[str] | tuple[str, ...], pattern: str = "*.tif",
                   recursive: bool = True) -> list[SceneInput]:
    """Expand files, folders, globs and list files into unique scenes, in a stable order."""
    paths: list[str] = []
    for item in items:
        paths.extend(_expand(item, pattern, recursive))
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise InputError(f"no scenes found in {', '.join(items) or '(no inputs)'} "
                         f"(pattern {pattern!r})")
    scenes = [SceneInput(p, scene_folder_name(p)) for p in unique]
    _check_unique_names(scenes)
    return scenes


def _expand(item: str, pattern: str, recursive: bool) -> list[str]:
    if is_remote(item):
        return [item]
    path = Path(item)
    if path.is_dir():
        found = path.rglob(pattern) if recursive else path.glob(pattern)
        return sorted(str(p.resolve()) for p in found if p.is_file())
    if path.is_file():
        if path.suffix.lower() in LIST_SUFFIXES:
            return read_list_file(path)
        return [str(path.resolve())]
    if GLOB_CHARS.search(item):
        return sorted(str(Path(p).resolve()) for p in glob.glob(item, recursive=True)
                      if Path(p).is_file())
    raise InputError(f"input not found: {item}")


def read_list_file(path: Path) -> list[str]:
    """One path per line (``#`` comments), or CSV with a ``path`` column; relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read scene list {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        column = next((c for c in (rows[0].keys() if rows else []) if c and c.strip().lower() == "path"),
                      None)
        if column is None:
            raise InputError(f"scene list {path}: CSV needs a 'path' column")
        entries = [(row.get(column) or "").strip() for row in rows]
    else:
        entries = [line.strip() for line in text.splitlines()]
    out = []
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        if is_remote(entry):
            out.append(entry)
            continue
        full = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        if not full.is_file():
            raise InputError(f"scene list {path}: file not found: {entry}")
        out.append(str(full.resolve()))
    return out


def scene_folder_name(path: str) -> str:
    """``<stem>-<8 hex digits of sha1(path)>``: readable, unique per path, one safe path component."""
    tail = path.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    stem = tail.rsplit(".", 1)[0] if "." in tail.lstrip(".") else tail
    safe = UNSAFE.sub("_", stem).strip("._-")[:MAX_STEM] or "scene"
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}"


def scene_folder(out_dir: Path, name: str) -> Path:
    """``out_dir / name``, refusing anything that is not one plain component inside ``out_dir``."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or UNSAFE.sub("", name) != name):
        raise InputError(f"unsafe scene folder name {name!r}")
    folder = out_dir / name
    if folder.resolve().parent != out_dir.resolve():
        raise InputError(f"scene folder {folder} would leave the output folder {out_dir}")
    return folder


def _check_unique_names(scenes: list[SceneInput]) -> None:
    seen: dict[str, str] = {}
    for scene in scenes:
        other = seen.setdefault(scene.name, scene.path)
        if other != scene.path:  # a sha1 prefix collision: astronomically unlikely, never silent
            raise InputError(f"scenes {other} and {scene.path} map to the same folder {scene.name}")
