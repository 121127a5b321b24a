"""Which scenes a batch run processes, and the output folder each one gets.

Inputs may be files, folders (searched recursively for a pattern), glob patterns, or a list file
(one path per line, or a CSV with a ``path`` column). GDAL virtual paths (``/vsis3/...``,
``/vsicurl/...``) and URLs pass through untouched: GDAL opens them, not Python.

Each scene's folder name is derived from its path alone (``<safe stem>-<hash of path>``), so it is
stable across runs with different input lists and can never leave ``--out``.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadprn.batch.stac import StacScene, is_stac_file, read_stac
from roadprn.errors import InputError

REMOTE_PREFIXES = ("/vsi", "s3://", "gs://", "http://", "https://", "az://")
LIST_SUFFIXES = (".txt", ".lst", ".csv")
GLOB_CHARS = re.compile(r"[*?\[]")
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_STEM = 60
LOG_FOLDER = ".roadprn-logs"  # crash logs of a batch run, inside --out
SCENE_FOLDER = re.compile(r"[A-Za-z0-9_.-]+-[0-9a-f]{8}")
# files extract writes into a scene folder (rasters and their QGIS styles; the network has
# other suffixes)
OUTPUT_SUFFIXES = ("_probability.tif", "_mask.tif", "_refined_mask.tif",
                   "_probability.qml", "_mask.qml", "_refined_mask.qml")

#: files whose headers are read to tell roadprn's own rasters (all GeoTIFFs) from scenes
RASTER_SUFFIXES = (".tif", ".tiff")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SceneInput:
    """A scene path exactly as GDAL should open it, and its output folder name under --out."""

    path: str
    name: str
    #: this scene's own area (``window`` / ``bbox`` / ``bbox_crs``, from a CSV list's columns),
    #: replacing ``input.window`` / ``input.bbox`` for it; None = the run's config
    area: dict[str, Any] | None = None


def is_remote(path: str) -> bool:
    return path.startswith(REMOTE_PREFIXES)


@dataclass(frozen=True)
class FoundScenes:
    """The scenes a batch runs, the files it found but skipped (each with the reason), and the
    STAC Item behind each scene that came from a catalog (by scene path)."""

    scenes: list[SceneInput]
    skipped: list[tuple[str, str]]
    stac: dict[str, StacScene] = field(default_factory=dict)


def collect_inputs(items: list[str] | tuple[str, ...], pattern: str = "*.tif",
                   recursive: bool = True, out_dir: str | Path | None = None,
                   exclude: Sequence[str] = ()) -> list[SceneInput]:
    """Expand files, folders, globs and list files into unique scenes, in a stable order
    (:func:`find_scenes` without the skipped files)."""
    return find_scenes(items, pattern, recursive, out_dir, exclude).scenes


def find_scenes(items: list[str] | tuple[str, ...], pattern: str = "*.tif",
                recursive: bool = True, out_dir: str | Path | None = None,
                exclude: Sequence[str] = (), asset_key: str | None = None) -> FoundScenes:
    """Expand files, folders, globs and list files into unique scenes, in a stable order.

    Skipped, with the reason: a batch's own outputs in ``out_dir`` (when ``--out`` is inside an
    input folder), any roadprn output or ``synth`` label (known by its tags, wherever it lies:
    a folder made by ``synth`` holds ``*_mask.tif`` labels beside the scenes), and files whose
    name or path matches an ``exclude`` pattern (``fnmatch``, e.g. ``*_nir.tif``).
    A STAC catalog, collection, item collection or item (``.json``) gives one scene per Item:
    its ``asset_key`` asset, else its image asset (:mod:`roadprn.batch.stac`).
    """
    paths: list[str] = []
    stac: dict[str, StacScene] = {}
    areas: dict[str, dict[str, Any]] = {}
    for item in items:
        if _is_stac(item):
            found = read_stac(item, asset_key)
            stac.update((scene.path, scene) for scene in found)
            paths.extend(scene.path for scene in found)
        else:
            paths.extend(_expand(item, pattern, recursive))
            if item.lower().endswith(".csv") and Path(item).is_file():
                areas.update(list_areas(Path(item)))
    unique = list(dict.fromkeys(paths))
    skipped: list[tuple[str, str]] = []
    if exclude:
        excluded = [p for p in unique if _excluded(p, exclude)]
        skipped += [(p, "matches --exclude") for p in excluded]
        dropped = set(excluded)
        unique = [p for p in unique if p not in dropped]
    if out_dir is not None:
        is_output = batch_output_filter(Path(out_dir))
        own = [p for p in unique if not is_remote(p) and is_output(p)]
        if own:
            log.info("%d file(s) in %s are this batch's own outputs and not scenes",
                     len(own), out_dir)
        ours = set(own)
        unique = [p for p in unique if p not in ours]
    made = roadprn_made(unique)
    skipped += [(p, f"a roadprn {role}, not a scene") for p, role in made.items()]
    unique = [p for p in unique if p not in made]
    if not unique:
        raise InputError(f"no scenes found in {', '.join(items) or '(no inputs)'} "
                         f"(pattern {pattern!r}"
                         f"{f'; {len(skipped)} file(s) skipped' if skipped else ''})")
    scenes = [SceneInput(p, scene_folder_name(p), areas.get(p)) for p in unique]
    _check_unique_names(scenes)
    return FoundScenes(scenes, skipped, {p: stac[p] for p in unique if p in stac})


def _is_stac(item: str) -> bool:
    if is_remote(item):
        return item.split("?", 1)[0].lower().endswith(".json")
    return is_stac_file(Path(item))


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


def roadprn_made(paths: Sequence[str]) -> dict[str, str]:
    """The local rasters among ``paths`` that roadprn wrote (``output`` of extract: tagged
    ``ROADPRN_VERSION``; ``synth label``: tagged ``ROADPRN_ROLE=label``), read from their
    headers a few at a time; a file that does not open stays a scene (and fails as one)."""
    from concurrent.futures import ThreadPoolExecutor

    local = [p for p in paths if not is_remote(p) and p.lower().endswith(RASTER_SUFFIXES)]
    if not local:
        return {}
    with ThreadPoolExecutor(min(8, len(local)), "roadprn-tags") as pool:
        roles = dict(zip(local, pool.map(_made_by_roadprn, local), strict=True))
    return {p: role for p, role in roles.items() if role is not None}


def _made_by_roadprn(path: str) -> str | None:
    import rasterio

    from roadprn.raster.gdal_env import GDAL_ERRORS

    if not Path(path).is_file():  # never a FIFO or a device: opening one would block
        return None
    try:
        with rasterio.open(path) as ds:
            tags = ds.tags()
    except GDAL_ERRORS:
        return None
    except OSError:
        return None
    if tags.get("ROADPRN_ROLE") == "label":
        return "synth label"
    return "output" if "ROADPRN_VERSION" in tags else None


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


AREA_COLUMNS = ("window", "bbox", "bbox_crs")


def list_areas(path: Path) -> dict[str, dict[str, Any]]:
    """Per-scene areas of a CSV scene list: optional ``window`` (``COL,ROW,WIDTH,HEIGHT``),
    ``bbox`` (``MINX,MINY,MAXX,MAXY``) and ``bbox_crs`` columns; an empty cell = the run's."""
    from roadprn.raster.subset import four_numbers

    text = path.read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        return {}
    columns = {c.strip().lower(): c for c in rows[0] if c}
    if not any(c in columns for c in AREA_COLUMNS):
        return {}
    areas: dict[str, dict[str, Any]] = {}
    paths = read_list_file(path)  # same rows, same order, resolved as scenes
    entries = [row for row in rows if (row.get(columns["path"]) or "").strip()
               and not (row.get(columns["path"]) or "").strip().startswith("#")]
    for scene, row in zip(paths, entries, strict=True):
        area: dict[str, Any] = {}
        for key, kind in (("window", int), ("bbox", float)):
            cell = (row.get(columns.get(key, "")) or "").strip()
            if cell:
                values = four_numbers(cell, kind)
                if values is None:
                    raise InputError(f"scene list {path}: {key} {cell!r} of {scene} is not "
                                     "four comma-separated numbers")
                area[key] = values
        crs = (row.get(columns.get("bbox_crs", "")) or "").strip()
        if crs:
            area["bbox_crs"] = crs
        if area:
            areas[scene] = area
    return areas


def read_list_file(path: Path) -> list[str]:
    """One path per line (``#`` comments), or CSV with a ``path`` column; relative to the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read scene list {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        column = next((c for c in (rows[0].keys() if rows else [])
                       if c and c.strip().lower() == "path"),
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


def batch_output_filter(out_dir: Path) -> Callable[[str], bool]:
    """A test for "this path is something a batch run wrote into ``out_dir``".

    True for the manifest, crash logs, temporary files, and files inside a scene folder: one
    the manifest names, or one named like a scene folder (``<stem>-<8 hex>``) holding an
    extract output or roadprn's hidden staging files (a run killed before its record).
    A scene lying directly in ``out_dir`` stays a scene.
    """
    from roadprn.batch.manifest import MANIFEST_NAME, read_records
    from roadprn.outputs.atomic import TMP_MARKER

    root = out_dir.resolve()
    if not root.is_dir():
        return lambda path: False
    named = {r["name"] for r in read_records(root / MANIFEST_NAME)
             if r.get("type") == "scene" and isinstance(r.get("name"), str)}

    def is_output(path: str) -> bool:
        try:
            rel = Path(path).resolve().relative_to(root)
        except ValueError:
            return False
        parts = rel.parts
        if not parts or parts[0] in (LOG_FOLDER, MANIFEST_NAME) or TMP_MARKER in rel.name:
            return True
        if len(parts) < 2:
            return False
        if parts[0] in named:
            return True
        return bool(SCENE_FOLDER.fullmatch(parts[0])) and (
            rel.name.endswith(OUTPUT_SUFFIXES) or any(p.startswith(".roadprn-") for p in parts))

    return is_output


def scene_folder_name(path: str) -> str:
    """``<stem>-<8 hex digits of sha1(path)>``: readable, unique per path, one safe path
    component."""
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


def outside_bbox(scenes: Sequence[SceneInput], bbox: Sequence[float], bbox_crs: str | None,
                 allow_ungeoreferenced: bool = False) -> set[str]:
    """Paths of the scenes ``input.bbox`` does not touch (headers read a few at a time): an
    area of interest over a tiled archive skips the tiles around it instead of failing them.
    A scene whose header cannot be read is kept (it fails as a scene, with its reason)."""
    from concurrent.futures import ThreadPoolExecutor

    from roadprn.raster.scene import open_scene
    from roadprn.raster.subset import bbox_window

    box = (bbox[0], bbox[1], bbox[2], bbox[3])

    def misses(scene: SceneInput) -> bool:
        try:
            info = open_scene(scene.path, allow_ungeoreferenced=allow_ungeoreferenced,
                              check_readable=False)
            bbox_window(info, box, bbox_crs)
        except InputError as exc:
            return "does not overlap" in str(exc)
        return False

    if not scenes:
        return set()
    with ThreadPoolExecutor(min(8, len(scenes)), "roadprn-bbox") as pool:
        return {s.path for s, out in zip(scenes, pool.map(misses, scenes), strict=True) if out}
